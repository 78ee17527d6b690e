/**
 * A pod's server in the firewall tests: answers its name on every TCP port given (as a one-line HTTP
 * response, so curl can probe it) and on every UDP port, on IPv4 and IPv6 (listens on `::`).
 * Usage: deno run --allow-net --unstable-net _server.ts NAME tcp:80 udp:81 …   Prints `ready` once listening.
 */
const [name = "pod", ...specs] = Deno.args;
const enc = new TextEncoder();
for (const spec of specs) {
  const [proto, portText] = spec.split(":");
  const port = Number(portText);
  if (proto === "tcp") {
    const l = Deno.listen({ hostname: "::", port });
    (async () => {
      for await (const conn of l) {
        (async () => {
          try {
            const buf = new Uint8Array(4096);
            await conn.read(buf);
            await conn.write(enc.encode(`HTTP/1.0 200 OK\r\nContent-Length: ${name.length}\r\n\r\n${name}`));
          } catch { /* client went away */ }
          try {
            conn.close();
          } catch { /* closed */ }
        })();
      }
    })();
  } else {
    const s = Deno.listenDatagram({ hostname: "::", port, transport: "udp" });
    (async () => {
      for await (const [, from] of s) await s.send(enc.encode(name), from).catch(() => {});
    })();
  }
}
console.log("ready");
