/**
 * Service-account tokens as kube-apiserver issues them (`--service-account-issuer`, the TokenRequest
 * API): JWTs signed with the server's service-account key (ES256 here; kube-apiserver accepts RSA or
 * ECDSA keys), carrying `sub: system:serviceaccount:<ns>:<name>`, the audiences, expiry, and the
 * `kubernetes.io` claim naming the account (and the pod or node the token is bound to). The key lives in
 * the state directory so tokens survive a restart of the server, as they survive one of kube-apiserver.
 */
import { join } from "node:path";

/** The issuer and default audience (kube-apiserver's default when `--api-audiences` is not set). */
export const TOKEN_ISSUER = "https://kubernetes.default.svc.cluster.local";

export interface BoundObject {
  kind: "Pod" | "Node" | "Secret";
  name: string;
  uid: string;
}

export interface TokenClaims {
  iss: string;
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  "kubernetes.io": {
    namespace: string;
    serviceaccount: { name: string; uid: string };
    pod?: { name: string; uid: string };
    node?: { name: string; uid: string };
    secret?: { name: string; uid: string };
  };
}

export interface MintOptions {
  namespace: string;
  name: string;
  /** The ServiceAccount's uid (checked again on every use: a recreated account's old tokens stop working). */
  uid: string;
  audiences?: readonly string[];
  /** Lifetime; default 3600 (kube-apiserver's TokenRequest default). */
  expirationSeconds?: number;
  boundObject?: BoundObject;
  /** The node a bound pod runs on (kube-apiserver adds it to pod-bound tokens). */
  node?: { name: string; uid: string };
}

const enc = new TextEncoder();
const b64url = (b: Uint8Array | string): string => {
  const bytes = typeof b === "string" ? enc.encode(b) : b;
  let s = "";
  for (const x of bytes) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
};
const unb64url = (s: string): Uint8Array<ArrayBuffer> => {
  const t = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(t, (c) => c.charCodeAt(0));
};

const ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;

/** Signs and verifies service-account tokens with one key. */
export class TokenIssuer {
  readonly #cache = new Map<string, TokenClaims>();
  private constructor(
    private readonly privateKey: CryptoKey,
    private readonly publicKey: CryptoKey,
    /** Key id (`kid` header): a hash of the public key, as kube-apiserver derives it. */
    readonly keyId: string,
  ) {}

  /** Loads the key from `dir/sa-key.jwk`, or makes one and saves it there (mode 0600). */
  static async load(dir: string): Promise<TokenIssuer> {
    const path = join(dir, "sa-key.jwk");
    let jwk: JsonWebKey | undefined;
    try {
      jwk = JSON.parse(await Deno.readTextFile(path));
    } catch { /* made below */ }
    if (!jwk) {
      const pair = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]) as CryptoKeyPair;
      jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      await Deno.writeTextFile(tmp, JSON.stringify(jwk), { mode: 0o600 });
      await Deno.rename(tmp, path);
    }
    const privateKey = await crypto.subtle.importKey("jwk", jwk, ALG, false, ["sign"]);
    const { d: _d, key_ops: _k, ...pub } = jwk;
    const publicKey = await crypto.subtle.importKey("jwk", { ...pub, key_ops: ["verify"] }, ALG, true, [
      "verify",
    ]);
    const raw = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
    const kid = b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", raw)));
    return new TokenIssuer(privateKey, publicKey, kid);
  }

  /** A signed token and when it expires. */
  async mint(o: MintOptions, now = Date.now()): Promise<{ token: string; claims: TokenClaims }> {
    const iat = Math.floor(now / 1000);
    const claims: TokenClaims = {
      iss: TOKEN_ISSUER,
      sub: `system:serviceaccount:${o.namespace}:${o.name}`,
      aud: o.audiences?.length ? [...o.audiences] : [TOKEN_ISSUER],
      exp: iat + (o.expirationSeconds ?? 3600),
      iat,
      nbf: iat,
      jti: crypto.randomUUID(),
      "kubernetes.io": {
        namespace: o.namespace,
        serviceaccount: { name: o.name, uid: o.uid },
        ...(o.boundObject?.kind === "Pod"
          ? { pod: { name: o.boundObject.name, uid: o.boundObject.uid } }
          : {}),
        ...(o.boundObject?.kind === "Secret"
          ? { secret: { name: o.boundObject.name, uid: o.boundObject.uid } }
          : {}),
        ...(o.boundObject?.kind === "Node"
          ? { node: { name: o.boundObject.name, uid: o.boundObject.uid } }
          : {}),
        ...(o.node && o.boundObject?.kind === "Pod" ? { node: o.node } : {}),
      },
    };
    const head = b64url(JSON.stringify({ alg: "ES256", kid: this.keyId }));
    const body = b64url(JSON.stringify(claims));
    const sig = new Uint8Array(
      await crypto.subtle.sign(SIGN, this.privateKey, enc.encode(`${head}.${body}`)),
    );
    return { token: `${head}.${body}.${b64url(sig)}`, claims };
  }

  /**
   * The claims of a token this issuer signed, unexpired and meant for `audience`; undefined for
   * anything else (another key, a forged or truncated token, an expired one).
   */
  async verify(token: string, audience = TOKEN_ISSUER, now = Date.now()): Promise<TokenClaims | undefined> {
    let claims = this.#cache.get(token);
    if (!claims) {
      const parts = token.split(".");
      if (parts.length !== 3) return undefined;
      try {
        const header = JSON.parse(new TextDecoder().decode(unb64url(parts[0]!)));
        if (header.alg !== "ES256") return undefined;
        const ok = await crypto.subtle.verify(
          SIGN,
          this.publicKey,
          unb64url(parts[2]!),
          enc.encode(`${parts[0]}.${parts[1]}`),
        );
        if (!ok) return undefined;
        claims = JSON.parse(new TextDecoder().decode(unb64url(parts[1]!))) as TokenClaims;
      } catch {
        return undefined;
      }
      if (claims.iss !== TOKEN_ISSUER || !claims["kubernetes.io"]?.serviceaccount?.name) return undefined;
      // Verified tokens are remembered (a client sends the same one on every request); bounded.
      if (this.#cache.size > 10_000) this.#cache.clear();
      this.#cache.set(token, claims);
    }
    const t = now / 1000;
    if (t >= claims.exp || t < claims.nbf - 60) return undefined;
    if (!claims.aud.includes(audience)) return undefined;
    return claims;
  }
}
