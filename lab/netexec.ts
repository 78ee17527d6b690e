/**
 * The program that plays a pod's containers, behaving like agnhost `netexec`: HTTP on each TCP port
 * answering /hostname (the pod name), /clientip (the caller's ip:port as seen here), /echo?msg=, /healthz;
 * UDP on each UDP port answering `hostname`, `clientip` and `echo <text>`. No imports, so each pod costs one
 * small Deno process. Prints `ready` on stdout once every port listens.
 *
 * Usage: deno run --allow-net --unstable-net lab/netexec.ts <pod-name> tcp:8080 udp:8081 …
 */

const [hostname = "pod", ...specs] = Deno.args;
const ports = specs.length ? specs : ["tcp:8080", "udp:8081"];
const enc = new TextEncoder();
const dec = new TextDecoder();

function hostPort(addr: Deno.Addr): string {
  const a = addr as Deno.NetAddr;
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

for (const spec of ports) {
  const [proto, portText] = spec.split(":");
  const port = Number(portText);
  if (proto === "tcp") {
    Deno.serve({ port, hostname: "0.0.0.0", onListen() {} }, (req, info) => {
      const url = new URL(req.url);
      switch (url.pathname) {
        case "/hostname":
          return new Response(hostname);
        case "/clientip":
          return new Response(hostPort(info.remoteAddr));
        case "/echo":
          return new Response(url.searchParams.get("msg") ?? "");
        case "/healthz":
          return new Response("ok");
        case "/":
          return new Response(`NOW: ${new Date().toISOString()}`);
        default:
          return new Response("404 page not found\n", { status: 404 });
      }
    });
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
