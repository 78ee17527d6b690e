/**
 * A throwaway PKI for the lab API server, made with Debian's `openssl`: a CA, a server certificate
 * for the given names/addresses, and a client certificate (CN=admin, O=system:masters) for
 * client-certificate authentication. Reused from the state directory when already there, so a
 * restarted server keeps working with kubeconfigs written before.
 */
import { join } from "node:path";

export interface Pki {
  caCertPath: string;
  caKeyPath: string;
  serverCertPath: string;
  serverKeyPath: string;
  clientCertPath: string;
  clientKeyPath: string;
}

export class CertError extends Error {
  override readonly name = "CertError";
}

async function openssl(args: string[], cwd: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    throw new CertError("cannot run openssl (Debian package openssl)", { cause: err });
  }
  if (!out.success) {
    throw new CertError(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

const isIp = (s: string): boolean => /^[0-9.]+$/.test(s) || s.includes(":");

/**
 * Makes (or reuses) the PKI in `dir/pki`. `names` are the server certificate's subject alternative
 * names (IP addresses or DNS names); 127.0.0.1, ::1 and localhost are always included.
 */
export async function ensurePki(dir: string, names: readonly string[] = []): Promise<Pki> {
  const pki = join(dir, "pki");
  await Deno.mkdir(pki, { recursive: true, mode: 0o700 });
  const p: Pki = {
    caCertPath: join(pki, "ca.crt"),
    caKeyPath: join(pki, "ca.key"),
    serverCertPath: join(pki, "apiserver.crt"),
    serverKeyPath: join(pki, "apiserver.key"),
    clientCertPath: join(pki, "admin.crt"),
    clientKeyPath: join(pki, "admin.key"),
  };
  const sans = [
    ...new Set([
      "127.0.0.1",
      "::1",
      "localhost",
      "kubernetes",
      "kubernetes.default",
      "kubernetes.default.svc",
      ...names,
    ]),
  ];
  const sanText = sans.map((s) => (isIp(s) ? `IP:${s}` : `DNS:${s}`)).join(",");
  const sanFile = join(pki, "apiserver.sans");
  const have = await exists(p.clientKeyPath) && await exists(sanFile) &&
    (await Deno.readTextFile(sanFile)) === sanText;
  if (have) return p;
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  if (!(await exists(p.caKeyPath)) || !(await exists(p.caCertPath))) {
    await openssl([
      "req",
      "-x509",
      ...ec,
      "-keyout",
      p.caKeyPath,
      "-out",
      p.caCertPath,
      "-days",
      "3650",
      "-subj",
      "/CN=lab-kubernetes-ca",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ], pki);
  }
  const sign = async (name: string, subj: string, ext: string, key: string, cert: string) => {
    const csr = join(pki, `${name}.csr`);
    const extFile = join(pki, `${name}.ext`);
    await Deno.writeTextFile(extFile, ext);
    await openssl(["req", "-new", ...ec, "-keyout", key, "-out", csr, "-subj", subj], pki);
    await openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      p.caCertPath,
      "-CAkey",
      p.caKeyPath,
      "-CAcreateserial",
      "-out",
      cert,
      "-days",
      "3650",
      "-extfile",
      extFile,
    ], pki);
    await Deno.remove(csr);
    await Deno.remove(extFile);
  };
  await sign(
    "apiserver",
    "/CN=kube-apiserver",
    `subjectAltName=${sanText}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n`,
    p.serverKeyPath,
    p.serverCertPath,
  );
  await sign(
    "admin",
    "/O=system:masters/CN=admin",
    "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    p.clientKeyPath,
    p.clientCertPath,
  );
  await Deno.writeTextFile(sanFile, sanText);
  return p;
}
