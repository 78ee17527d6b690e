/**
 * BGP error codes (RFC 4271 section 4.5, RFC 4486 Cease subcodes) and the one error type the codec
 * throws. A `BgpError` carries what the NOTIFICATION must say, so a session that catches it can answer
 * the peer precisely; nothing else may escape a decoder (the fuzz tests hold the codec to that).
 */

export const ERR_HEADER = 1;
export const ERR_OPEN = 2;
export const ERR_UPDATE = 3;
export const ERR_HOLD_TIMER = 4;
export const ERR_FSM = 5;
export const ERR_CEASE = 6;
export const ERR_ROUTE_REFRESH = 7;

// Message Header Error subcodes
export const HDR_NOT_SYNCHRONIZED = 1;
export const HDR_BAD_LENGTH = 2;
export const HDR_BAD_TYPE = 3;

// OPEN Message Error subcodes
export const OPEN_UNSUPPORTED_VERSION = 1;
export const OPEN_BAD_PEER_AS = 2;
export const OPEN_BAD_BGP_ID = 3;
export const OPEN_UNSUPPORTED_OPT_PARAM = 4;
export const OPEN_UNACCEPTABLE_HOLD_TIME = 6;
export const OPEN_UNSUPPORTED_CAPABILITY = 7;

// UPDATE Message Error subcodes
export const UPD_MALFORMED_ATTR_LIST = 1;
export const UPD_UNRECOGNIZED_WELLKNOWN = 2;
export const UPD_MISSING_WELLKNOWN = 3;
export const UPD_ATTR_FLAGS = 4;
export const UPD_ATTR_LENGTH = 5;
export const UPD_INVALID_ORIGIN = 6;
export const UPD_INVALID_NEXT_HOP = 8;
export const UPD_OPTIONAL_ATTR = 9;
export const UPD_INVALID_NETWORK = 10;
export const UPD_MALFORMED_AS_PATH = 11;

// Cease subcodes (RFC 4486)
export const CEASE_MAX_PREFIXES = 1;
export const CEASE_ADMIN_SHUTDOWN = 2;
export const CEASE_PEER_DECONFIGURED = 3;
export const CEASE_ADMIN_RESET = 4;
export const CEASE_CONNECTION_REJECTED = 5;
export const CEASE_OTHER_CONFIG_CHANGE = 6;
export const CEASE_COLLISION = 7;
export const CEASE_OUT_OF_RESOURCES = 8;

const CODE_NAMES: Record<number, string> = {
  1: "message header error",
  2: "open message error",
  3: "update message error",
  4: "hold timer expired",
  5: "finite state machine error",
  6: "cease",
  7: "route refresh message error",
};

export function notificationName(code: number, subcode: number): string {
  return `${CODE_NAMES[code] ?? `code ${code}`} (subcode ${subcode})`;
}

/** A protocol error: the session must send NOTIFICATION `code`/`subcode` with `data`, then close. */
export class BgpError extends Error {
  constructor(
    readonly code: number,
    readonly subcode: number,
    message: string,
    readonly data: Uint8Array = new Uint8Array(0),
    options?: ErrorOptions,
  ) {
    super(`${message} [${notificationName(code, subcode)}]`, options);
    this.name = "BgpError";
  }
}

export function isBgpError(e: unknown): e is BgpError {
  return e instanceof BgpError;
}

/** Failure to reach or talk to a peer at the transport level (connect refused, reset, MD5 setup). */
export class TransportError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TransportError";
  }
}

/** A configuration the speaker cannot accept (bad address, unknown peer). */
export class BgpConfigError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BgpConfigError";
  }
}
