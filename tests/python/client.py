"""The unchanged webmesh 0.1.2 client against a server; prints what it saw as JSON.

usage: client.py PORT msgpack|json [echo-only]
"""
import json
import sys
import time

from webmesh.message_serializers import MessagePackSerializer, StandardJsonSerializer
from webmesh.webmesh_client import WebMeshClient

port, codec = int(sys.argv[1]), sys.argv[2]
serializer = StandardJsonSerializer() if codec == "json" else MessagePackSerializer()
client = WebMeshClient(host="127.0.0.1", port=port, message_serializer=serializer)
client.start(threaded=True)
client.await_started()

seen = {}
seen["echo"] = client.call("/echo", {"blop": 56})
seen["root"] = client.call("/", [1, "two", None, 3.5])
seen["unknown"] = client.call("/does/not/exist", {"x": 1})

if sys.argv[3:] != ["echo-only"]:
    # An emit is fire-and-forget: poll until its effect shows.
    before = client.call("/getinc", None)
    client.emit("/inc", None)
    after = before
    for _ in range(200):
        after = client.call("/getinc", None)
        if after != before:
            break
        time.sleep(0.01)
    seen["inc"] = after - before

results = []
client.call_async("/echo", "async", callback=results.append).wait(10)
seen["call_async"] = results

print(json.dumps(seen), flush=True)
client.close()
