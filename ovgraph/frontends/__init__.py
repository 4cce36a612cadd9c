"""Protocol frontends (REST on Tornado, gRPC KServe v2) and their one error mapping."""
