/**
 * A restricted pickle interpreter: enough of the pickle virtual machine (protocols 2–5, the
 * binary opcodes) to read what torch.save writes, and nothing that runs code. Globals are looked
 * up in a table the caller provides (e.g. `torch._utils._rebuild_tensor_v2` → a JS function that
 * builds a tensor description); any other global is refused with a MonobenchError naming it.
 * Persistent ids (torch's storages) go to a caller callback.
 */
import { MonobenchError } from "../util/errors.ts";

/** A Python tuple (immutable; distinct from a list). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** A Python dict or collections.OrderedDict with str / int keys (insertion order kept). */
export class PyDict {
  readonly map: Map<string | number, PyValue> = new Map();
  constructor(readonly ordered = false) {}
}

/** An object built by a global from the table (a tensor, a storage type, …). */
export class PyObject {
  constructor(readonly kind: string, readonly value: unknown) {}
}

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | PyDict
  | PyObject;

/** What a whitelisted global does when the pickle calls it (REDUCE / NEWOBJ). */
export interface PyGlobal {
  /** Called with the argument tuple's items. Omit for globals that are only referenced. */
  call?(args: PyValue[]): PyValue;
}

export interface UnpickleOptions {
  /** "module.qualname" → behaviour. */
  globals: Record<string, PyGlobal>;
  /** Resolve a persistent id (BINPERSID). Omit to refuse persistent ids. */
  persistentLoad?(pid: PyValue): PyValue;
  /** BUILD (`obj.__setstate__(state)`): return the object, or throw. Omit to refuse BUILD. */
  build?(obj: PyValue, state: PyValue): PyValue;
  /** Names the data in messages. */
  what: string;
}

const MARK = Symbol("mark");
type StackItem = PyValue | typeof MARK | GlobalRef;

class GlobalRef {
  constructor(readonly name: string, readonly g: PyGlobal) {}
}

const MAX_STACK = 1 << 20;

/** Run the pickle in `data` and return its value. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  const { what } = opts;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let p = 0;

  const bad = (msg: string): never => {
    throw new MonobenchError(`${what}: ${msg} (at byte ${p} of the pickle)`);
  };
  const need = (n: number) => {
    if (p + n > data.length) bad("the pickle ends early (truncated or corrupt file)");
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), (p += 2), dv.getUint16(p - 2, true));
  const u32 = () => (need(4), (p += 4), dv.getUint32(p - 4, true));
  const i32 = () => (need(4), (p += 4), dv.getInt32(p - 4, true));
  const bytes = (n: number) => {
    if (!Number.isSafeInteger(n) || n < 0) bad("bad length");
    need(n);
    p += n;
    return data.subarray(p - n, p);
  };
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad("implausible length");
    return Number(v);
  };
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) bad("unterminated line");
    const s = latin1.decode(data.subarray(p, end));
    p = end + 1;
    return s;
  };
  const str = (b: Uint8Array) => {
    try {
      return utf8.decode(b);
    } catch {
      return bad("a string is not valid UTF-8");
    }
  };
  const push = (v: StackItem) => {
    if (stack.length >= MAX_STACK) bad("pickle stack too deep");
    stack.push(v);
  };
  const pop = (): StackItem => (stack.length === 0 ? bad("stack underflow (corrupt pickle)") : stack.pop()!);
  const value = (v: StackItem): PyValue => {
    if (v === MARK) return bad("unexpected MARK");
    if (v instanceof GlobalRef) return new PyObject("global", v.name);
    return v;
  };
  const popMark = (): StackItem[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) bad("no MARK on the stack (corrupt pickle)");
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const findGlobal = (module: string, name: string): GlobalRef => {
    const full = `${module}.${name}`;
    const g = opts.globals[full];
    if (!g) {
      throw new MonobenchError(
        `${what}: refusing to load Python object ${full}: only tensors, dicts and plain values are read`,
        "save a dict of tensors (e.g. model.state_dict()) or a single tensor with torch.save",
      );
    }
    return new GlobalRef(full, g);
  };
  const call = (f: StackItem, args: StackItem): PyValue => {
    if (!(f instanceof GlobalRef)) return bad("REDUCE on something that is not a known global");
    if (!f.g.call) return bad(`${f.name} cannot be called`);
    if (!(args instanceof PyTuple)) return bad(`${f.name} called without an argument tuple`);
    return f.g.call(args.items);
  };
  const setItem = (d: StackItem, k: StackItem, v: StackItem) => {
    if (!(d instanceof PyDict)) bad("SETITEM on something that is not a dict");
    const key = value(k);
    if (typeof key !== "string" && typeof key !== "number") bad("dict keys must be strings or integers");
    (d as PyDict).map.set(key as string | number, value(v));
  };
  const long = (b: Uint8Array): number | bigint => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v < 2 || v > 5) bad(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: { // STOP
        const v = pop();
        return value(v);
      }
      case 0x28: // MARK
        push(MARK);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: { // DUP
        const v = pop();
        push(v);
        push(v);
        break;
      }
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: // BININT
        push(i32());
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
        push(long(bytes(u8())));
        break;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0 || n > 64) bad("implausibly long integer");
        push(long(bytes(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        need(8);
        push(dv.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: // BINUNICODE
        push(str(bytes(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(str(bytes(u8())));
        break;
      case 0x8d: // BINUNICODE8
        push(str(bytes(u64())));
        break;
      case 0x55: // SHORT_BINSTRING (Python 2 str)
        push(latin1.decode(bytes(u8())));
        break;
      case 0x54: // BINSTRING
        push(latin1.decode(bytes(i32())));
        break;
      case 0x43: // SHORT_BINBYTES
        push(bytes(u8()).slice());
        break;
      case 0x42: // BINBYTES
        push(bytes(u32()).slice());
        break;
      case 0x8e: // BINBYTES8
        push(bytes(u64()).slice());
        break;
      case 0x7d: // EMPTY_DICT
        push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PyTuple([]));
        break;
      case 0x85: // TUPLE1
        push(new PyTuple([value(pop())]));
        break;
      case 0x86: { // TUPLE2
        const b = value(pop()), a = value(pop());
        push(new PyTuple([a, b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = value(pop()), b = value(pop()), a = value(pop());
        push(new PyTuple([a, b, c]));
        break;
      }
      case 0x74: // TUPLE
        push(new PyTuple(popMark().map(value)));
        break;
      case 0x6c: // LIST
        push(popMark().map(value));
        break;
      case 0x64: { // DICT
        const items = popMark();
        if (items.length % 2) bad("odd number of items for DICT");
        const d = new PyDict();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        push(d);
        break;
      }
      case 0x61: { // APPEND
        const v = value(pop());
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) bad("APPEND to something that is not a list");
        (l as PyValue[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark().map(value);
        const l = stack[stack.length - 1];
        if (!Array.isArray(l)) bad("APPENDS to something that is not a list");
        for (const v of items) (l as PyValue[]).push(v);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        setItem(stack[stack.length - 1], k, v);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) bad("odd number of items for SETITEMS");
        const d = stack[stack.length - 1];
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line(), name = line();
        push(findGlobal(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = value(pop()), module = value(pop());
        if (typeof name !== "string" || typeof module !== "string") bad("STACK_GLOBAL needs two strings");
        push(findGlobal(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), f = pop();
        push(call(f, args));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args)
        const args = pop(), cls = pop();
        push(call(cls, args));
        break;
      }
      case 0x62: { // BUILD
        const state = value(pop());
        const obj = value(pop());
        if (!opts.build) bad("unexpected BUILD");
        push(opts.build!(obj, state));
        break;
      }
      case 0x51: { // BINPERSID
        const pid = value(pop());
        if (!opts.persistentLoad) bad("unexpected persistent id");
        push(opts.persistentLoad!(pid));
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), stack[stack.length - 1] ?? bad("BINPUT on an empty stack"));
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), stack[stack.length - 1] ?? bad("LONG_BINPUT on an empty stack"));
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, stack[stack.length - 1] ?? bad("MEMOIZE on an empty stack"));
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const k = op === 0x68 ? u8() : u32();
        if (!memo.has(k)) bad(`memo entry ${k} is missing (corrupt pickle)`);
        push(memo.get(k)!);
        break;
      }
      default:
        bad(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}
