/**
 * Holds one TCP connection to an HTTP server and asks GET /hostname on it every 100 ms for SECONDS,
 * printing `{"ok": n, "failed": m, "error": "..."}` at the end. The connection is never reopened: a
 * failure means the established connection was broken.
 * Usage: deno run --allow-net _keepalive_client.ts HOST PORT SECONDS
 */
const [host = "", port = "80", seconds = "5"] = Deno.args;
const enc = new TextEncoder();
const dec = new TextDecoder();
let ok = 0, failed = 0, error = "";
try {
  const conn = await Deno.connect({ hostname: host, port: Number(port) });
  const end = Date.now() + Number(seconds) * 1000;
  const buf = new Uint8Array(4096);
  while (Date.now() < end) {
    await conn.write(enc.encode(`GET /hostname HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`));
    const timer = setTimeout(() => conn.close(), 2000);
    const n = await conn.read(buf);
    clearTimeout(timer);
    if (n === null) throw new Error("connection closed");
    if (dec.decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200")) ok++;
    else failed++;
    await new Promise((r) => setTimeout(r, 100));
  }
  conn.close();
} catch (e) {
  failed++;
  error = String(e);
}
console.log(JSON.stringify({ ok, failed, error }));
