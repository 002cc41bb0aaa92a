"""A webmesh 0.1.2 server; prints its port, serves until stdin closes.

usage: server.py msgpack|json
"""
import sys
import time

from webmesh.message_serializers import MessagePackSerializer, StandardJsonSerializer
from webmesh.webmesh_server import WebMeshServer

serializer = StandardJsonSerializer() if sys.argv[1] == "json" else MessagePackSerializer()
server = WebMeshServer(host="127.0.0.1", port=0, message_serializer=serializer)
count = {"n": 0}


@server.on("/echo")
def echo(payload, path, client):
    return payload


@server.on("/inc")
def inc(payload, path, client):
    count["n"] += 1


@server.on("/delay")
def delay(payload, path, client):
    time.sleep(payload["sleep"])
    return payload["n"]


@server.on("/getinc")
def getinc(payload, path, client):
    return count["n"]


server.start(threaded=True)
server.await_started()
print(server.server.sockets[0].getsockname()[1], flush=True)
sys.stdin.read()
