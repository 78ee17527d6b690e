/** The pod program (lab/netexec.ts) on loopback: agnhost netexec's answers over HTTP/1.1 and UDP. */
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";

const script = new URL("../../../lab/netexec.ts", import.meta.url).pathname;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function withNetexec(fn: (tcp: number, udp: number) => Promise<void>): Promise<void> {
  const tcp = freePort();
  const udp = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--unstable-net", script, "pod-a", `tcp:${tcp}`, `udp:${udp}`],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let out = "";
    while (!out.includes("ready")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("netexec exited");
      out += value;
    }
    await fn(tcp, udp);
  } finally {
    child.kill("SIGKILL");
    await reader.cancel().catch(() => {});
    await child.status;
  }
}

/** One raw HTTP exchange, so keep-alive and framing are checked, not a client library's tolerance. */
async function rawHttp(port: number, requests: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(requests));
  let text = "";
  const buf = new Uint8Array(4096);
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const n = await Promise.race([conn.read(buf), new Promise<null>((r) => setTimeout(() => r(null), 300))]);
    if (n === null) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  conn.close();
  return text;
}

Deno.test("netexec answers /hostname, /clientip, /echo and 404 over keep-alive HTTP/1.1", async () => {
  await withNetexec(async (tcp) => {
    const res = await fetch(`http://127.0.0.1:${tcp}/hostname`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "pod-a");
    const ip = await (await fetch(`http://127.0.0.1:${tcp}/clientip`)).text();
    assert.match(ip, /^127\.0\.0\.1:\d+$/);
    assert.equal(await (await fetch(`http://127.0.0.1:${tcp}/echo?msg=hello%20lab`)).text(), "hello lab");
    const nf = await fetch(`http://127.0.0.1:${tcp}/nope`);
    assert.equal(nf.status, 404);
    await nf.body?.cancel();
    // Two pipelined requests on one connection, the first with a body to skip.
    const raw = await rawHttp(
      tcp,
      "POST /echo?msg=a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyzGET /hostname HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    const bodies = raw.split("\r\n\r\n").slice(1).map((b) => b.split("HTTP/1.1")[0]);
    assert.deepEqual(bodies, ["a", "pod-a"]);
  });
});

Deno.test("netexec answers hostname, clientip and echo over UDP", async () => {
  await withNetexec(async (_tcp, udp) => {
    // node:dgram, since Deno.listenDatagram needs --unstable-net, which `deno task test` does not pass.
    const sock = createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    try {
      const ask = (msg: string) =>
        new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no UDP answer to ${msg}`)), 3000);
          sock.once("message", (data) => {
            clearTimeout(timer);
            resolve(new TextDecoder().decode(data));
          });
          sock.send(msg, udp, "127.0.0.1");
        });
      assert.equal(await ask("hostname"), "pod-a");
      assert.equal(await ask("clientip"), `127.0.0.1:${sock.address().port}`);
      assert.equal(await ask("echo over udp"), "over udp");
    } finally {
      await new Promise<void>((r) => sock.close(() => r()));
    }
  });
});
