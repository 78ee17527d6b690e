/**
 * The program that plays a pod's containers, behaving like agnhost `netexec`: HTTP on each TCP port
 * answering /hostname (the pod name), /clientip (the caller's ip:port as seen here), /echo?msg=, /healthz;
 * UDP on each UDP port answering `hostname`, `clientip` and `echo <text>`; on each `tcpraw` port it writes the
 * pod name and closes, as agnhost `serve-hostname --tcp --http=false`. No imports, so each container costs
 * one small Deno process. Prints `ready` on stdout once every port listens.
 *
 * Usage: deno run --allow-net --unstable-net lab/netexec.ts <pod-name> tcp:8080 udp:8081 tcpraw:80 tcp6:8090 …
 */

const [hostname = "pod", ...specs] = Deno.args;
const ports = specs.length ? specs : ["tcp:8080", "udp:8081"];
const enc = new TextEncoder();
const dec = new TextDecoder();

function hostPort(addr: Deno.Addr): string {
  const a = addr as Deno.NetAddr;
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

function answer(path: string, query: URLSearchParams, remote: Deno.Addr): [number, string] {
  switch (path) {
    case "/hostname":
      return [200, hostname];
    case "/clientip":
      return [200, hostPort(remote)];
    case "/echo":
      return [200, query.get("msg") ?? ""];
    case "/healthz":
      return [200, "ok"];
    case "/":
      return [200, `NOW: ${new Date().toISOString()}`];
    default:
      return [404, "404 page not found\n"];
  }
}

/**
 * A minimal HTTP/1.1 server on a raw listener (keep-alive, GET-style requests; a request body is read
 * and ignored). Deno.serve would do, but costs ~50 ms more start-up per pod, and pods start by the dozen.
 */
async function serveHttp(listener: Deno.Listener): Promise<void> {
  for await (const conn of listener) {
    (async () => {
      let buf = "";
      const chunk = new Uint8Array(4096);
      try {
        while (true) {
          const n = await conn.read(chunk);
          if (n === null) break;
          buf += dec.decode(chunk.subarray(0, n));
          let end: number;
          while ((end = buf.indexOf("\r\n\r\n")) >= 0) {
            const head = buf.slice(0, end);
            const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
            if (buf.length < end + 4 + len) break;
            buf = buf.slice(end + 4 + len);
            const [, target = "/"] = head.split(" ", 3);
            const url = new URL(target, "http://x");
            const [status, body] = answer(url.pathname, url.searchParams, conn.remoteAddr);
            const close = /\r\nconnection:\s*close/i.test(head) || head.includes("HTTP/1.0");
            const bytes = enc.encode(body);
            const header = `HTTP/1.1 ${status} ${status === 200 ? "OK" : "Not Found"}\r\n` +
              `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${bytes.length}\r\n` +
              `${close ? "Connection: close\r\n" : ""}\r\n`;
            const out = new Uint8Array(enc.encode(header).length + bytes.length);
            out.set(enc.encode(header));
            out.set(bytes, out.length - bytes.length);
            for (let off = 0; off < out.length;) off += await conn.write(out.subarray(off));
            if (close) throw new Error("close");
          }
        }
      } catch { /* peer went away or asked to close */ }
      try {
        conn.close();
      } catch { /* closed */ }
    })();
  }
}

for (const spec of ports) {
  const [proto, portText] = spec.split(":");
  const port = Number(portText);
  if (proto === "tcp") {
    serveHttp(Deno.listen({ port, hostname: "0.0.0.0" }));
  } else if (proto === "tcpraw") {
    (async () => {
      for await (const conn of Deno.listen({ port, hostname: "0.0.0.0" })) {
        conn.write(enc.encode(hostname)).catch(() => {}).finally(() => {
          try {
            conn.close();
          } catch { /* closed */ }
        });
      }
    })();
  } else if (proto === "tcp6") {
    // IPv6 on its own port: "::" would also take IPv4 on a shared port and show clients as ::ffff:a.b.c.d.
    serveHttp(Deno.listen({ port, hostname: "::" }));
  } else if (proto === "udp") {
    const sock = Deno.listenDatagram({ port, hostname: "0.0.0.0", transport: "udp" });
    (async () => {
      for await (const [data, from] of sock) {
        const msg = dec.decode(data).trim();
        let reply: string;
        if (msg === "hostname") reply = hostname;
        else if (msg === "clientip") reply = hostPort(from);
        else if (msg.startsWith("echo ")) reply = msg.slice(5);
        else reply = "";
        if (reply) await sock.send(enc.encode(reply), from).catch(() => {});
      }
    })();
  }
}
console.log("ready");
