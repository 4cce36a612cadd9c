"""Generated protobuf modules (tools/gen_proto.py from proto/); do not edit."""
