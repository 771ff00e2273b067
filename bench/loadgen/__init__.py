"""The one load generator of the bench: raw WebSocket and HTTP clients in worker processes,
on loopback, bounded in time. The same code drives livesignal and the socket.io servers.

- wire: the frames of each server family (dialects);
- client: one raw WebSocket socket (an asyncio Protocol);
- procs: the worker processes, their pipes and deadlines;
- chat: rooms with a paced sender (fan-out, many rooms, latency);
- idle: sockets that only answer pings (memory, ping cost);
- http: keep-alive REST GETs (heartbeats).
"""
