// Node socket.io 4: the peer of livesignal in the bench (bench/run.py).
//   node bench/compare/node/server.js PORT [PING_INTERVAL_MS]
// Clients emit "join" ROOM (acknowledged "ok") to enter a socket.io room; "chat" ROOM TEXT is
// broadcast as "chat" TEXT to that room. Engine.IO's ping interval defaults to 25 s.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const pingInterval = process.argv[3] ? Number(process.argv[3]) : 25000;
const httpServer = http.createServer();
const io = new Server(httpServer, { pingInterval, pingTimeout: 20000, serveClient: false });

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("chat", (room, text) => {
    io.to(room).emit("chat", text);
  });
});

httpServer.listen(port, "127.0.0.1");
