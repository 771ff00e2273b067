"""Media gateway bench: /exchange latency, the server CPU of rtmp2rtc and rtc2rtmp, SFU scaling.

    python bench/media_bench.py [--exchanges 100] [--seconds 10] [--json] [--only sfu]

Everything runs on 127.0.0.1: nginx-rtmp (rendered from config/nginx-rtmp.conf on free
ports), the gateway in a child process (so its CPU is measured alone, with
time.process_time() over all its threads), ffmpeg as the RTMP publisher, and aiortc peers in
this process. Needs nginx + libnginx-mod-rtmp and ffmpeg. Bounded: about 15 s + 3 windows
(about 45 s with the defaults).

Measured:
- /exchange latency: an aiortc offer (audio + video) to answer, p50 / p99 over N calls;
- rtmp2rtc: ffmpeg pushes 640x360@25 H.264 + AAC, the gateway pulls it and passes the
  H.264 through to one aiortc subscriber (AAC -> Opus transcoded);
- rtc2rtmp: one aiortc publisher (640x360@30, its default offer: the gateway negotiates
  H.264), the gateway remuxes its H.264 and encodes its Opus to AAC into FLV to nginx-rtmp;
  reported with the publisher-only baseline subtracted;
- SFU scaling: one aiortc publisher (640x360@30 VP8, video only) and 0, 1, 4 and 8 aiortc
  subscribers; the gateway's CPU seconds per second over all its threads, read from
  /proc/<pid>/stat (utime + stime), and how many decoders and encoders the gateway started
  during the scenario (livesignal.media.census).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (640, 360)


def _loopback_ice() -> None:
    # aioice never offers 127.0.0.1 by itself; pin every peer to loopback.
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the gateway under test (child process) ---------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from livesignal.media.census import CENSUS
    from livesignal.media.http.mount import add_media_routes
    from livesignal.signal.model.clock import SystemClock

    _loopback_ice()

    async def cpu(request: web.Request) -> web.Response:
        decoders, encoders = CENSUS.totals()
        return web.json_response(
            {
                "cpu": time.process_time(),
                "wall": time.monotonic(),
                "codecs": {"decoders": decoders, "encoders": encoders},
            }
        )

    app = web.Application()
    add_media_routes(app, make_settings(args), SystemClock())
    app.router.add_get("/bench/cpu", cpu)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


def make_settings(args: argparse.Namespace) -> Any:
    from livesignal.settings import RtcSettings, Settings, StreamSettings

    base = f"rtmp://127.0.0.1:{args.rtmp_port}/live"
    return Settings(
        stream=StreamSettings(
            publish_base=base, rtmp_play_base=base, security="expiry", publish_key=args.key
        ),
        rtc=RtcSettings(access_key="bench", secret_key=args.secret),
    )


# --- helpers ------------------------------------------------------------------------------------


def render_nginx(tmp: Path, rtmp_port: int, app_port: int) -> Path:
    text = (ROOT / "config" / "nginx-rtmp.conf").read_text()
    for old, new in {
        "listen 1935;": f"listen 127.0.0.1:{rtmp_port};",
        "listen 8088;": f"listen 127.0.0.1:{free_port()};",
        "http://127.0.0.1:8080/": f"http://127.0.0.1:{app_port}/",
        "/var/lib/nginx/hls": str(tmp / "hls"),
    }.items():
        text = text.replace(old, new)
    (tmp / "hls").mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End a process this bench started, by its PID."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            await asyncio.sleep(0.05)


def make_tracks() -> tuple[Any, Any]:
    import av
    import numpy as np
    from aiortc.mediastreams import MediaStreamTrack

    class Video(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None
            self.count = 0
            width, height = SIZE
            x = np.arange(width, dtype=np.uint16)[None, :]
            y = np.arange(height, dtype=np.uint16)[:, None]
            self.base = x + y

        async def recv(self) -> Any:
            self.start = self.start or time.monotonic()
            self.count += 1
            await asyncio.sleep(max(0.0, self.start + self.count / 30 - time.monotonic()))
            luma = ((self.base + self.count * 3) % 256).astype(np.uint8)
            image = np.stack([luma, luma[::-1], luma[:, ::-1]], axis=2)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.count * 3000
            frame.time_base = fractions.Fraction(1, 90000)
            return frame

    class Audio(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None
            self.count = 0

        async def recv(self) -> Any:
            self.start = self.start or time.monotonic()
            await asyncio.sleep(max(0.0, self.start + self.count * 0.02 - time.monotonic()))
            t = (np.arange(960) + self.count * 960) / 48000
            tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(
                np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = 48000
            frame.pts = self.count * 960
            frame.time_base = fractions.Fraction(1, 48000)
            self.count += 1
            return frame

    return Video(), Audio()


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after "pid (comm)": fields[0] is state (field 3), so utime (14) and stime (15) are 11, 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace, session: Any, base: str) -> None:
        from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls

        self.args = args
        self.session = session
        self.base = base
        settings = make_settings(args)
        self.tokens = RtcTokenCodec(settings.rtc)
        self.urls = StreamUrls(settings.stream, settings.rtc)

    def headers(self, room: str, user: str) -> dict[str, str]:
        return {"Token": self.tokens.issue(room, user, time.time()), "Room-Id": room}

    async def post(self, path: str, room: str, user: str, body: Any) -> dict[str, Any]:
        async with self.session.post(
            self.base + path, json=body, headers=self.headers(room, user)
        ) as response:
            reply: dict[str, Any] = await response.json()
        if reply.get("resultCode") != 10000:
            raise RuntimeError(f"{path}: {reply}")
        return reply

    async def cpu(self) -> tuple[float, float]:
        async with self.session.get(self.base + "/bench/cpu") as response:
            data = await response.json()
        return float(data["cpu"]), float(data["wall"])

    async def cpu_rate(self, seconds: float) -> float:
        cpu0, wall0 = await self.cpu()
        await asyncio.sleep(seconds)
        cpu1, wall1 = await self.cpu()
        return (cpu1 - cpu0) / (wall1 - wall0)

    async def codecs(self) -> dict[str, Any]:
        async with self.session.get(self.base + "/bench/cpu") as response:
            data: dict[str, Any] = await response.json()
        return data.get("codecs", {})

    async def connect(
        self,
        room: str,
        user: str,
        publish: list[Any],
        subscribe: list[tuple[str, str]],
        *,
        video_codec: str | None = None,
    ) -> tuple[Any, dict[str, Any], dict[str, int]]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import MediaStreamError
        from aiortc.rtcrtpsender import RTCRtpSender

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        counts: dict[str, int] = {}

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def read() -> None:
                try:
                    while True:
                        await track.recv()
                        counts[track.kind] = counts.get(track.kind, 0) + 1
                except MediaStreamError:
                    pass

            asyncio.ensure_future(read())

        for track in publish:
            pc.addTrack(track)
        for _, kind in subscribe:
            pc.addTransceiver(kind, direction="recvonly")
        if video_codec is not None:
            codecs = RTCRtpSender.getCapabilities("video").codecs
            wanted = [c for c in codecs if c.name in (video_codec, "rtx")]
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(wanted)
        await pc.setLocalDescription(await pc.createOffer())
        body = {
            "sdp": {"type": "offer", "sdp": pc.localDescription.sdp},
            "subscribeList": [{"uri": uri} for uri, _ in subscribe],
        }
        reply = await self.post("/exchange", room, user, body)
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"]["sdp"], "answer"))
        return pc, reply, counts

    async def exchange_latency(self) -> dict[str, float]:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        samples: list[float] = []
        for i in range(self.args.exchanges):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(AudioStreamTrack())
            pc.addTrack(VideoStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())
            body = {"sdp": {"type": "offer", "sdp": pc.localDescription.sdp}}
            started = time.perf_counter()
            await self.post("/exchange", "latency", f"u{i}", body)
            samples.append((time.perf_counter() - started) * 1000)
            await self.post("/exit", "latency", f"u{i}", None)
            await pc.close()
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return {"n": len(samples), "p50_ms": statistics.median(samples), "p99_ms": cuts[98]}

    async def rtmp2rtc(self, ffmpeg: str, procs: list[subprocess.Popen[bytes]]) -> float:
        push = self.urls.push_url("bench-in", int(time.time()) + 600)
        width, height = SIZE
        duration = self.args.seconds + 30
        procs.append(
            subprocess.Popen(
                [ffmpeg, "-nostdin", "-loglevel", "error", "-re",
                 "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=25:duration={duration}",
                 "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={duration}",
                 "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
                 "-profile:v", "baseline", "-g", "50", "-bf", "0", "-b:v", "1M",
                 "-c:a", "aac", "-b:a", "64k", "-f", "flv", push],
                stdin=subprocess.DEVNULL,
            )
        )  # fmt: skip
        play = self.urls.rtmp_play_url("bench-in")
        reply = await self.post("/rtmp/exchange", "r2r", "relay", {"rtmp": {"uri": play}})
        uris = {item["mediaType"]: item["uri"] for item in reply["publishList"]}
        pc, _, counts = await self.connect(
            "r2r", "viewer", [], [(uris[1], "video"), (uris[0], "audio")]
        )
        deadline = time.monotonic() + 20
        while counts.get("video", 0) < 25:
            if time.monotonic() > deadline:
                raise RuntimeError("rtmp2rtc: no video reached the subscriber")
            await asyncio.sleep(0.1)
        rate = await self.cpu_rate(self.args.seconds)
        await self.post("/exit", "r2r", "viewer", None)
        await self.post("/rtmp/exit", "r2r", "relay", None)
        await pc.close()
        stop(procs.pop())
        return rate

    async def rtc2rtmp(self) -> tuple[float, float]:
        video, audio = make_tracks()
        pc, reply, _ = await self.connect("c2r", "alice", [audio, video], [])
        uris = [item["uri"] for item in reply["publishList"]]
        await asyncio.sleep(2)  # let the publisher's connection and decoders settle
        baseline = await self.cpu_rate(self.args.seconds)
        target = self.urls.push_url("bench-out", int(time.time()) + 600)
        body = {
            "rtmp": {"rtmpSubscribeList": [{"userId": "alice", "rtmpUri": target}] * 2},
            "rtc": {"subscribeList": [{"uri": uri} for uri in uris]},
        }
        await self.post("/rtmp/exchange", "c2r", "relay", body)
        await asyncio.sleep(2)
        loaded = await self.cpu_rate(self.args.seconds)
        await self.post("/rtmp/exit", "c2r", "relay", None)
        await self.post("/exit", "c2r", "alice", None)
        await pc.close()
        return baseline, loaded

    async def sfu_scaling(self, pid: int) -> list[dict[str, Any]]:
        """One VP8 publisher, then 0, 1, 4 and 8 subscribers: the gateway's CPU for each."""
        video, _ = make_tracks()
        pub, reply, _ = await self.connect("sfu", "pub", [video], [], video_codec="VP8")
        uri = reply["publishList"][0]["uri"]
        viewers: list[tuple[Any, dict[str, int]]] = []
        rows: list[dict[str, Any]] = []
        codecs_before = await self.codecs()
        try:
            await asyncio.sleep(2)  # the publisher's connection settles
            for count in (0, 1, 4, 8):
                while len(viewers) < count:
                    pc, _, counts = await self.connect(
                        "sfu", f"viewer{len(viewers)}", [], [(uri, "video")]
                    )
                    viewers.append((pc, counts))
                deadline = time.monotonic() + 20
                while any(counts.get("video", 0) < 30 for _, counts in viewers):
                    if time.monotonic() > deadline:
                        raise RuntimeError("sfu: a subscriber receives no video")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1)
                frames0 = [counts.get("video", 0) for _, counts in viewers]
                cpu0, wall0 = proc_cpu_seconds(pid), time.monotonic()
                await asyncio.sleep(self.args.seconds)
                cpu1, wall1 = proc_cpu_seconds(pid), time.monotonic()
                fps = [
                    (counts.get("video", 0) - before) / (wall1 - wall0)
                    for (_, counts), before in zip(viewers, frames0, strict=True)
                ]
                rows.append(
                    {
                        "subscribers": count,
                        "cpu_s_per_s": (cpu1 - cpu0) / (wall1 - wall0),
                        "min_subscriber_fps": min(fps) if fps else None,
                        "codecs": {
                            role: count - codecs_before.get(role, 0)
                            for role, count in (await self.codecs()).items()
                        },
                    }
                )
        finally:
            for index, (pc, _) in enumerate(viewers):
                await self.post("/exit", "sfu", f"viewer{index}", None)
                await pc.close()
            await self.post("/exit", "sfu", "pub", None)
            await pub.close()
        return rows


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg or not Path(nginx).exists():
        raise SystemExit("needs nginx (+ libnginx-mod-rtmp) and ffmpeg")
    _loopback_ice()
    args.port, args.rtmp_port = free_port(), free_port()
    args.key, args.secret = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            server = subprocess.Popen(
                # "--opt=value": a random key may start with "-"
                [sys.executable, __file__, "--serve", f"--port={args.port}",
                 f"--rtmp-port={args.rtmp_port}", f"--key={args.key}", f"--secret={args.secret}"],
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(server)
            conf = render_nginx(tmp, args.rtmp_port, args.port)
            directives = f"daemon off; pid {tmp / 'nginx.pid'};"
            if os.geteuid() == 0:
                directives += " user root;"
            procs.append(
                subprocess.Popen(
                    [
                        nginx,
                        "-p",
                        str(tmp),
                        "-c",
                        str(conf),
                        "-e",
                        str(tmp / "error.log"),
                        "-g",
                        directives,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            )
            await wait_port(args.port, server, "gateway")
            await wait_port(args.rtmp_port, procs[-1], "nginx")
            async with aiohttp.ClientSession() as session:
                run = Bench(args, session, f"http://127.0.0.1:{args.port}")
                idle = await run.cpu_rate(1.0)
                if args.only == "sfu":
                    return {"sfu": await run.sfu_scaling(server.pid), "window_s": args.seconds}
                latency = await run.exchange_latency()
                rtmp2rtc = await run.rtmp2rtc(ffmpeg, procs)
                baseline, loaded = await run.rtc2rtmp()
                sfu = await run.sfu_scaling(server.pid)
        finally:
            for process in reversed(procs):
                stop(process, signal.SIGINT if process is procs[0] else signal.SIGTERM)
    return {
        "sfu": sfu,
        "exchange": latency,
        "idle_cpu_s_per_s": idle,
        "rtmp2rtc_cpu_s_per_s": rtmp2rtc,
        "rtc2rtmp": {
            "publisher_only_cpu_s_per_s": baseline,
            "with_push_cpu_s_per_s": loaded,
            "push_cpu_s_per_s": loaded - baseline,
        },
        "window_s": args.seconds,
        "video": f"{SIZE[0]}x{SIZE[1]}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exchanges", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU measuring window")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=["sfu"], help="run only this scenario")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rtmp-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    lines = sfu_table(result["sfu"])
    if args.only == "sfu":
        print("\n".join(lines))
        return
    ex = result["exchange"]
    c2r = result["rtc2rtmp"]
    video = result["video"]
    lines = [
        f"/exchange latency      n={ex['n']}  p50={ex['p50_ms']:.1f} ms  p99={ex['p99_ms']:.1f} ms",
        f"idle gateway           {result['idle_cpu_s_per_s']:.3f} CPU s/s",
        f"rtmp2rtc (1 stream)    {result['rtmp2rtc_cpu_s_per_s']:.3f} CPU s/s"
        f"  ({video}@25 H.264 pass-through + AAC->Opus, 1 subscriber)",
        f"rtc2rtmp (1 stream)    {c2r['push_cpu_s_per_s']:.3f} CPU s/s"
        f"  (with push {c2r['with_push_cpu_s_per_s']:.3f}"
        f" - publisher only {c2r['publisher_only_cpu_s_per_s']:.3f};"
        f" {video}@30 H.264 remuxed + Opus->AAC into FLV)",
        "",
        *lines,
    ]
    print("\n".join(lines))


def sfu_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "SFU scaling: one 640x360@30 VP8 publisher (video only)",
        "subscribers  gateway CPU s/s  per added subscriber  min subscriber fps  started",
    ]
    previous: dict[str, Any] | None = None
    for row in rows:
        added = ""
        if previous is not None and row["subscribers"] > previous["subscribers"]:
            step = row["subscribers"] - previous["subscribers"]
            added = f"{(row['cpu_s_per_s'] - previous['cpu_s_per_s']) / step:+.3f}"
        fps = row["min_subscriber_fps"]
        codecs = ", ".join(f"{k} {v}" for k, v in sorted(row["codecs"].items())) or "-"
        lines.append(
            f"{row['subscribers']:>11}  {row['cpu_s_per_s']:>15.3f}  {added:>20}"
            f"  {'-' if fps is None else f'{fps:.1f}':>18}  {codecs}"
        )
        previous = row
    return lines


if __name__ == "__main__":
    main()
