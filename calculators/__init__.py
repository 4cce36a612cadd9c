"""Built-in calculators of ovgraph, registered through the ``ovgraph.calculators`` entry points."""
