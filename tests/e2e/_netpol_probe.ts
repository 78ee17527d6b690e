/**
 * The conformance table's prober, run inside one pod's network namespace (`lab exec`): probes every
 * target given at once and prints one JSON array of booleans (true = the target pod answered with its
 * name). TCP connects and reads what the agnhost `serve-hostname --tcp --http=false` server writes before
 * closing; UDP sends a datagram and waits for the name. Refused or silent both count as not reached.
 *
 *   deno run --allow-net --unstable-net _netpol_probe.ts '[{"ip":"10.1.2.3","port":80,"proto":"tcp","name":"a"}]'
 */
interface Target {
  ip: string;
  port: number;
  proto: "tcp" | "udp";
  name: string;
}
const targets = JSON.parse(Deno.args[0] ?? "[]") as Target[];
const timeoutMs = Number(Deno.args[1] ?? "1500");
const dec = new TextDecoder();

function withTimeout<T>(p: Promise<T>, onTimeout: () => void): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((r) => {
      timer = setTimeout(() => {
        onTimeout();
        r(undefined);
      }, timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function tcp(t: Target): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    const got = await withTimeout(
      (async () => {
        conn = await Deno.connect({ hostname: t.ip, port: t.port });
        let text = "";
        const buf = new Uint8Array(512);
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          text += dec.decode(buf.subarray(0, n));
        }
        return text.trim();
      })(),
      () => {
        try {
          conn?.close();
        } catch { /* closed */ }
      },
    );
    return got === t.name;
  } catch {
    return false;
  } finally {
    try {
      conn?.close();
    } catch { /* closed */ }
  }
}

async function udp(t: Target): Promise<boolean> {
  const sock = Deno.listenDatagram({
    hostname: t.ip.includes(":") ? "::" : "0.0.0.0",
    port: 0,
    transport: "udp",
  });
  try {
    await sock.send(new TextEncoder().encode("hostname"), { transport: "udp", hostname: t.ip, port: t.port });
    const got = await withTimeout(sock.receive(), () => sock.close());
    return got !== undefined && dec.decode(got[0]).trim() === t.name;
  } catch {
    return false;
  } finally {
    try {
      sock.close();
    } catch { /* closed */ }
  }
}

const results = await Promise.all(targets.map((t) => (t.proto === "tcp" ? tcp(t) : udp(t))));
console.log(JSON.stringify(results));
Deno.exit(0);
