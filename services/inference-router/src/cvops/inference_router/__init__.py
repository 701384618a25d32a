"""cvops inference router: KServe v2 HTTP/gRPC in front of supervised Triton servers."""
