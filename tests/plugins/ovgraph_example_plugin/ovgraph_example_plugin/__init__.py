"""Example ovgraph calculator plugin.

The package root imports nothing: ovgraph loads ``upper_case`` (or ``shout``) through the entry
point only when a graph names ``UpperCaseCalculator`` (or ``ShoutCalculator``).
"""
