/**
 * One UDP probe for the firewall tests (busybox nc has no UDP): sends one datagram and prints the first
 * reply, or nothing after the timeout. Usage: deno run --allow-net --unstable-net _udp_probe.ts IP PORT
 * [TIMEOUT_MS] [SOURCE_IP]
 */
const [ip = "", portText = "0", timeoutText = "1000", source] = Deno.args;
const v6 = ip.includes(":");
const sock = Deno.listenDatagram({ hostname: source ?? (v6 ? "::" : "0.0.0.0"), port: 0, transport: "udp" });
const timer = setTimeout(() => Deno.exit(1), Number(timeoutText));
try {
  await sock.send(new TextEncoder().encode("x"), { transport: "udp", hostname: ip, port: Number(portText) });
  const [data] = await sock.receive();
  console.log(new TextDecoder().decode(data));
  clearTimeout(timer);
  Deno.exit(0);
} catch {
  // ICMP errors (the firewall's reject) surface as a failed receive.
  Deno.exit(1);
}
