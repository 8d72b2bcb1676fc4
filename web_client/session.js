// One WebSocket session with the server: sends hello, decodes every message with protocol.js and
// hands it to `onMessage`; reports the close with its code and the server's last error.
// Reconnecting is the caller's decision (main.js): a session is one connection.

import * as P from "./protocol.js";

// Do not queue more than this on the socket: audio is real time, a stalled socket is a lost one.
const MAX_BUFFERED_BYTES = 2 * 1024 * 1024;

/** What a close code means for the user, and whether trying again can help. */
export function describeClose(code, error) {
  const detail = error?.message ? `: ${error.message}` : "";
  switch (code) {
    case P.CLOSE.NORMAL:
      return { text: "Session ended.", retry: false, kind: "ended" };
    case P.CLOSE.BAD_TOKEN:
      return { text: `Access denied: bad or missing token${detail}. Add ?token=… to the page URL.`, retry: false, kind: "bad_token" };
    case P.CLOSE.SERVER_FULL:
      return { text: `The server is full${detail}. Retrying…`, retry: true, kind: "server_full" };
    case P.CLOSE.BAD_MESSAGE:
      return { text: `The server rejected a message${detail}.`, retry: false, kind: "protocol" };
    case P.CLOSE.TOO_BIG:
      return { text: `A message was too big${detail}.`, retry: false, kind: "protocol" };
    case P.CLOSE.INTERNAL:
      return { text: `Server error${detail}. Reconnecting…`, retry: true, kind: "internal" };
    default:
      return { text: `Connection lost (code ${code})${detail}. Reconnecting…`, retry: true, kind: "lost" };
  }
}

export function defaultWsUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

export class Session {
  /**
   * @param url  ws:// URL of /ws
   * @param hello  fields for P.hello ({sampleRate, encoding, audio, identity, format, weights, token})
   * @param handlers  {onOpen(), onMessage(msg, bytes), onClose({code, reason, error, wasReady})};
   *   `bytes` is the size of the WebSocket message the server sent (for the HUD's bytes/s)
   */
  constructor(url, hello, handlers) {
    this.url = url;
    this.helloFields = hello;
    this.handlers = handlers;
    this.ready = null; // the `ready` message
    this.error = null; // the last `error` message
    this.closed = false;
    this.bytesSent = 0;
    this.bytesReceived = 0;
  }

  connect() {
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.sendRaw(P.hello(this.helloFields));
      this.handlers.onOpen?.();
    };
    ws.onmessage = (ev) => {
      const bytes = typeof ev.data === "string" ? new TextEncoder().encode(ev.data).length : ev.data.byteLength;
      this.bytesReceived += bytes;
      let msg;
      try {
        msg = P.decode(ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : ev.data);
      } catch (err) {
        // Browsers may only close with 1000 or 3000-4999: report it as the 1003 it is.
        console.warn("bad message from server:", err.message);
        this.error = { type: "error", code: err.code, message: `the server sent ${err.message}` };
        this.protocolFailed = true;
        this.close(1000, "bad message from server");
        return;
      }
      if (msg.type === "ready") this.ready = msg;
      if (msg.type === "error") this.error = msg;
      this.handlers.onMessage?.(msg, bytes);
    };
    ws.onclose = (ev) => {
      if (this.closed) return;
      this.closed = true;
      const code = this.protocolFailed ? P.CLOSE.BAD_MESSAGE : ev.code;
      this.handlers.onClose?.({ code, reason: ev.reason, error: this.error, wasReady: this.ready !== null });
    };
    ws.onerror = () => {}; // always followed by close, which carries the code
  }

  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  sendRaw(bytes) {
    if (!this.open) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) return false;
    this.ws.send(bytes);
    this.bytesSent += bytes.length;
    return true;
  }

  /** Send PCM (Uint8Array in the hello's encoding) as one `audio` message. */
  sendAudio(bytes) {
    return this.sendRaw(P.audioMessage(bytes));
  }

  sendOffer(sdp) { return this.sendRaw(P.offer(sdp)); }
  sendIdentity(name) { return this.sendRaw(P.identity(name)); }
  sendInterrupt() { return this.sendRaw(P.interrupt()); }
  sendEnd() { return this.sendRaw(P.end()); }

  close(code = 1000, reason = "") {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
  }
}
