"""Real helper servers for the media tests: nginx-rtmp from the deployable config, ffmpeg."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "config" / "nginx-rtmp.conf"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


# The fixture `rtmp_tools` (tests/media/conftest.py) fails, never skips, without them.
needs_rtmp = pytest.mark.usefixtures("rtmp_tools")


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    rtmp_port: int
    error_log: Path

    def url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


def render_nginx_conf(rtmp_port: int, http_port: int, app_port: int, hls_dir: Path) -> str:
    """The deployable config, moved onto loopback test ports; fails if it drifted."""
    text = NGINX_CONF.read_text()
    replacements = {
        "listen 1935;": f"listen 127.0.0.1:{rtmp_port};",
        "listen 8088;": f"listen 127.0.0.1:{http_port};",
        "http://127.0.0.1:8080/": f"http://127.0.0.1:{app_port}/",
        "/var/lib/nginx/hls": str(hls_dir),
    }
    for old, new in replacements.items():
        assert old in text, f"config/nginx-rtmp.conf no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End a process this suite started, by its PID."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def ffmpeg_push_args(url: str, seconds: float, *, audio: bool = True) -> list[str]:
    """Synthetic H.264 + AAC in FLV, paced in real time, the way a phone pushes."""
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
    args += ["-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
    args += ["-profile:v", "baseline", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    return [*args, "-f", "flv", url]
