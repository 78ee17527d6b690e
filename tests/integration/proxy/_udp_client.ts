/**
 * Sends one UDP datagram from a fixed source port and prints the answer (or nothing after 1 s).
 * Usage: deno run --allow-net --unstable-net _udp_client.ts TARGET PORT SRCPORT MESSAGE
 */
const [target = "", port = "0", src = "0", msg = "hostname"] = Deno.args;
const sock = Deno.listenDatagram({ hostname: "0.0.0.0", port: Number(src), transport: "udp" });
await sock.send(new TextEncoder().encode(msg), { transport: "udp", hostname: target, port: Number(port) });
const timer = setTimeout(() => {
  sock.close();
}, 1000);
try {
  const [data] = await sock.receive();
  console.log(new TextDecoder().decode(data));
} catch { /* timed out */ }
clearTimeout(timer);
try {
  sock.close();
} catch { /* closed */ }
