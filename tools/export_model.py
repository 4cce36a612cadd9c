"""OVMS's ``export_model.py`` for ovgraph: ``python tools/export_model.py text_generation ...``.

Same arguments as ``ovgraph export`` (see ``calculators/llm/export.py``); run it with the serving
environment's Python and give the export environment's Python with ``--exporter_python`` (or
``OVGRAPH_EXPORT_PYTHON``), or run it with the export environment's Python directly. Example::

    python tools/export_model.py text_generation --source_model ./hf/qwen2vl-tiny \\
        --model_name tiny --weight-format fp16 --model_repository_path models \\
        --config_file_path models/config.json --exporter_python .venv-export/bin/python
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calculators.llm.export import main

if __name__ == "__main__":
    sys.exit(main())
