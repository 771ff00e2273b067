"""The media gateway: SDP exchange on aiortc, RTMP <-> WebRTC for WeChat mini-programs."""
