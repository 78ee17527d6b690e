/** The protobuf wire format, read-only: enough to walk the fields of a message. */

export interface Field {
  no: number;
  wire: number;
  /** Varint value (wire 0), as a signed 64-bit number (int32/int64 fields carry negatives that way). */
  int?: number;
  /** Bytes (wire 2). */
  bytes?: Uint8Array;
  /** Fixed-width value (wire 1: 8 bytes, wire 5: 4 bytes), little-endian. */
  fixed?: Uint8Array;
}

/** The fields of one message, in wire order; throws RangeError on a truncated or malformed buffer. */
export function* fields(buf: Uint8Array): Generator<Field> {
  let i = 0;
  const varint = (): number => {
    let v = 0n, shift = 0n;
    for (;;) {
      if (i >= buf.length || shift > 63n) throw new RangeError("truncated varint");
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7n;
    }
    return Number(BigInt.asIntN(64, v));
  };
  const take = (n: number): Uint8Array => {
    if (n < 0 || i + n > buf.length) throw new RangeError("truncated field");
    const b = buf.subarray(i, i + n);
    i += n;
    return b;
  };
  while (i < buf.length) {
    const tag = varint();
    const no = Math.floor(tag / 8), wire = tag & 7;
    if (no <= 0) throw new RangeError(`bad field number ${no}`);
    if (wire === 0) yield { no, wire, int: varint() };
    else if (wire === 2) yield { no, wire, bytes: take(varint()) };
    else if (wire === 1) yield { no, wire, fixed: take(8) };
    else if (wire === 5) yield { no, wire, fixed: take(4) };
    else throw new RangeError(`unsupported wire type ${wire}`);
  }
}
