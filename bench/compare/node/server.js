// Node socket.io 4: the fan-out peer of bench/compare.py.
//   node bench/compare/node/server.js PORT
// Clients emit "join" (acknowledged) to enter the one room; "chat" is broadcast to that room.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const ROOM = "room";
const port = Number(process.argv[2]);
const httpServer = http.createServer();
// Long ping interval: the raw-socket receivers of the bench do not answer Engine.IO pings.
const io = new Server(httpServer, { pingInterval: 60000, pingTimeout: 60000, serveClient: false });

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
  socket.on("chat", (data) => {
    io.to(ROOM).emit("chat", data);
  });
});

httpServer.listen(port, "127.0.0.1");
