"""OVMS model calculators: compiled OpenVINO models as sessions, and inference on them."""
