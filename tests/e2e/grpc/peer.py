"""A real gRPC server and client for the gRPC e2e tests (tests/e2e/grpc.rs).

Generic handlers with raw-bytes messages (no serializers), so no protoc and no
generated code: the service is `test.Echo` with

- `Unary`: answers `echo:<request>`, with the trailing metadata `x-trailer: t1`; a
  request `fail` is answered with status NOT_FOUND and the message `no such thing`;
- `Stream`: server streaming, `<n>` in, `part-0` ... `part-<n-1>` out;
- `Chat`: bidirectional streaming, each message answered with `re:<message>` as it
  arrives.

`server [--tls CERT KEY]` listens on 127.0.0.1 (h2c, or TLS), prints `port <n>` and
serves until killed. `client TARGET [--authority A] [--tls CA_PEM --sni NAME]` runs one
call of each kind and prints one JSON object with what it got.
"""

import json
import sys
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def unary(request, context):
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-trailer", "t1"),))
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request)):
        yield ("part-%d" % i).encode()


def chat(requests, context):
    for message in requests:
        yield b"re:" + message


def serve(args):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    if args and args[0] == "--tls":
        with open(args[1], "rb") as c, open(args[2], "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    server.wait_for_termination()


def call_all(args):
    target = args[0]
    options = []
    tls = None
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag == "--authority":
            options.append(("grpc.default_authority", rest.pop(0)))
        elif flag == "--tls":
            tls = rest.pop(0)
        elif flag == "--sni":
            options.append(("grpc.ssl_target_name_override", rest.pop(0)))
    if tls:
        with open(tls, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    out = {}
    unary_call = channel.unary_unary("/%s/Unary" % SERVICE)
    reply, call = unary_call.with_call(b"hello", timeout=10)
    out["unary"] = reply.decode()
    out["trailers"] = dict(call.trailing_metadata() or ())
    stream_call = channel.unary_stream("/%s/Stream" % SERVICE)
    out["stream"] = [m.decode() for m in stream_call(b"3", timeout=10)]
    chat_call = channel.stream_stream("/%s/Chat" % SERVICE)
    out["chat"] = [m.decode() for m in chat_call(iter([b"a", b"b", b"c"]), timeout=10)]
    try:
        unary_call(b"fail", timeout=10)
        out["error"] = None
    except grpc.RpcError as e:
        out["error"] = {"code": e.code().name, "message": e.details()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2:])
    else:
        call_all(sys.argv[2:])
