"""KServe v2 gRPC frontend (``GRPCInferenceService`` plus ``ModelStreamInfer``)."""

from ovgraph.frontends.grpc.server import start_grpc_server

__all__ = ["start_grpc_server"]
