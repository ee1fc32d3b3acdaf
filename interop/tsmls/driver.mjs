// ts-mls (npm ts-mls, an independent TypeScript RFC 9420 stack) as a peer process for our interop tests.
//
// Protocol: JSON lines.  Every request on stdin is one object
//   {"id": <any>, "op": "<operation>", ...arguments}
// and gets exactly one response line on stdout, in order:
//   {"id": <same>, "result": {...}}   or   {"id": <same>, "error": "<ErrorName>: <message>"}
// where ErrorName is ts-mls's own (ValidationError, CodecError, CryptoVerificationError...), or the
// driver's UsageError (request out of order), UnsupportedError (unknown suite), TypeError (bad argument).
// Byte strings travel as lowercase hex.  Errors never end the process; end of
// stdin does.  Requests are handled strictly one at a time.
//
// The process holds one client (suite, basic credential, signature key, the
// private halves of the KeyPackages it handed out) and at most one group.
// Commits are created and merged in two steps, as in interop/mlsrs_peer.py:
// `add`/`commit_update` leave the next epoch pending until `merge_pending`;
// processing the peer's commit drops it (ts-mls itself is stateless: every call
// returns a new state, so "pending" is just a state we have not adopted yet).
//
// Operations:
//   new {suite, identity, ratchet_tree_extension=true, public_handshake=true} -> {key_package, signature_key}
//   key_package {}                     -> {key_package}          (another KeyPackage, same signature key)
//   create_group {group_id?}           -> {group_id}             (random 16-byte id when absent)
//   add {key_package}                  -> {commit, welcome}      (commit pending)
//   join {welcome, ratchet_tree?}      -> {group_id, epoch}
//   commit_update {}                   -> {commit}               (empty commit = UpdatePath; pending)
//   merge_pending {}                   -> {epoch}
//   process {message}                  -> {kind: "application", plaintext} | {kind: "commit", epoch}
//                                         | {kind: "proposal"}
//   encrypt {plaintext}                -> {message}              (PrivateMessage)
//   export {label, context, length}    -> {secret}               (label must be UTF-8: ts-mls takes a string)
//   epoch {}                           -> {epoch}
//   group_id {}                        -> {group_id}
//   ratchet_tree {}                    -> {ratchet_tree}         (the ratchet_tree extension's data)
//   suites {}                          -> {suites: {name: id}}
//
// Every MLS value in or out is an MLSMessage encoding, except the ratchet tree
// and exporter output.

import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";

import {
  acceptAll,
  ciphersuites,
  createApplicationMessage,
  createCommit,
  createGroup,
  decodeMlsMessage,
  defaultCapabilities,
  defaultLifetime,
  emptyPskIndex,
  encodeMlsMessage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
  joinGroup,
  mlsExporter,
  processMessage,
  zeroOutUint8Array,
} from "ts-mls";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decodeRatchetTree, encodeRatchetTree } from "ts-mls/ratchetTree.js";

/** An error named like ts-mls's own (UsageError, CodecError...), so the Python side can map it the same way. */
function driverError(name, message) {
  const error = new Error(message);
  error.name = name;
  return error;
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");

function unhex(value, name) {
  if (typeof value !== "string" || !/^([0-9a-fA-F]{2})*$/.test(value)) {
    throw new TypeError(`${name} must be a hex string`);
  }
  return new Uint8Array(Buffer.from(value, "hex"));
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Decode one MLSMessage and insist it spans the whole input (ts-mls ignores trailing bytes otherwise). */
function decodeWhole(bytes, expected) {
  const decoded = decodeMlsMessage(bytes, 0);
  if (decoded === undefined) throw driverError("CodecError", "not a decodable MLSMessage");
  const [message, end] = decoded;
  if (end !== bytes.length) throw driverError("CodecError", `${bytes.length - end} trailing bytes after the MLSMessage`);
  if (expected !== undefined && message.wireformat !== expected) {
    throw driverError("UsageError", `expected ${expected}, got ${message.wireformat}`);
  }
  return message;
}

const suiteNames = Object.fromEntries(Object.entries(ciphersuites).map(([name, id]) => [id, name]));

const peer = {
  impl: undefined, // CiphersuiteImpl
  credential: undefined,
  signature: undefined, // {signKey, publicKey}
  keyPackages: [], // [{publicPackage, privatePackage}] not yet used to join
  ratchetTreeExtension: true,
  publicHandshake: true,
  state: undefined, // ClientState of the current epoch
  pending: undefined, // CreateCommitResult not merged yet
};

function requireClient() {
  if (peer.impl === undefined) throw driverError("UsageError", "no client yet: call new first");
}

function requireGroup() {
  requireClient();
  if (peer.state === undefined) throw driverError("UsageError", "not in a group yet: create_group or join first");
  return peer.state;
}

function requireNoGroup() {
  requireClient();
  if (peer.state !== undefined) throw driverError("UsageError", "this peer already has a group");
}

async function newKeyPackage() {
  const generated = await generateKeyPackageWithKey(
    peer.credential, defaultCapabilities(), defaultLifetime, [], peer.signature, peer.impl);
  // Kept until a Welcome uses it (then dropped: a KeyPackage is single use, RFC 9420 section 10).
  peer.keyPackages.push(generated);
  return hex(encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: generated.publicPackage }));
}

function startCommit(result) {
  if (peer.pending !== undefined) throw driverError("UsageError", "a commit is already pending");
  peer.pending = result;
  return hex(encodeMlsMessage(result.commit));
}

const operations = {
  async new({ suite, identity, ratchet_tree_extension = true, public_handshake = true }) {
    if (peer.impl !== undefined) throw driverError("UsageError", "this process already has a client");
    const name = suiteNames[suite];
    if (name === undefined) throw driverError("UnsupportedError", `ts-mls has no cipher suite ${suite}`);
    const impl = await getCiphersuiteImpl(getCiphersuiteFromName(name));
    peer.signature = await impl.signature.keygen();
    peer.credential = { credentialType: "basic", identity: unhex(identity, "identity") };
    peer.ratchetTreeExtension = Boolean(ratchet_tree_extension);
    peer.publicHandshake = Boolean(public_handshake);
    peer.impl = impl;
    return { key_package: await newKeyPackage(), signature_key: hex(peer.signature.publicKey) };
  },

  async key_package() {
    requireClient();
    return { key_package: await newKeyPackage() };
  },

  async create_group({ group_id }) {
    requireNoGroup();
    const groupId = group_id === undefined || group_id === null ? randomBytes(16) : unhex(group_id, "group_id");
    // A fresh leaf of our own: the KeyPackages handed out stay joinable.
    const own = await generateKeyPackageWithKey(
      peer.credential, defaultCapabilities(), defaultLifetime, [], peer.signature, peer.impl);
    peer.state = await createGroup(groupId, own.publicPackage, own.privatePackage, [], peer.impl);
    return { group_id: hex(peer.state.groupContext.groupId) };
  },

  async add({ key_package }) {
    const state = requireGroup();
    const message = decodeWhole(unhex(key_package, "key_package"), "mls_key_package");
    const result = await createCommit({ state, cipherSuite: peer.impl }, {
      extraProposals: [{ proposalType: "add", add: { keyPackage: message.keyPackage } }],
      ratchetTreeExtension: peer.ratchetTreeExtension,
      wireAsPublicMessage: peer.publicHandshake,
    });
    if (result.welcome === undefined) throw driverError("InternalError", "ts-mls made no Welcome for the Add");
    const commit = startCommit(result);
    return { commit, welcome: hex(encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome: result.welcome })) };
  },

  async join({ welcome, ratchet_tree }) {
    requireNoGroup();
    const message = decodeWhole(unhex(welcome, "welcome"), "mls_welcome");
    let tree;
    if (ratchet_tree !== undefined && ratchet_tree !== null) {
      const bytes = unhex(ratchet_tree, "ratchet_tree");
      const decoded = decodeRatchetTree(bytes, 0);
      if (decoded === undefined || decoded[1] !== bytes.length) throw driverError("CodecError", "bad ratchet tree");
      tree = decoded[0];
    }
    // The Welcome names the KeyPackage it is for by reference; find our matching private keys.
    const refs = message.welcome.secrets.map((secret) => secret.newMember);
    let index = -1;
    for (let i = 0; i < peer.keyPackages.length && index < 0; i++) {
      const ref = await makeKeyPackageRef(peer.keyPackages[i].publicPackage, peer.impl.hash);
      if (refs.some((candidate) => equalBytes(candidate, ref))) index = i;
    }
    if (index < 0) throw driverError("UsageError", "the Welcome is for none of our KeyPackages");
    const own = peer.keyPackages[index];
    peer.state = await joinGroup(message.welcome, own.publicPackage, own.privatePackage, emptyPskIndex, peer.impl, tree);
    peer.keyPackages.splice(index, 1);
    return { group_id: hex(peer.state.groupContext.groupId), epoch: Number(peer.state.groupContext.epoch) };
  },

  async commit_update() {
    const state = requireGroup();
    const result = await createCommit({ state, cipherSuite: peer.impl }, {
      ratchetTreeExtension: peer.ratchetTreeExtension,
      wireAsPublicMessage: peer.publicHandshake,
    });
    return { commit: startCommit(result) };
  },

  async merge_pending() {
    requireGroup();
    if (peer.pending === undefined) throw driverError("UsageError", "no pending commit to merge");
    const { newState, consumed } = peer.pending;
    peer.state = newState;
    peer.pending = undefined;
    consumed.forEach(zeroOutUint8Array);
    return { epoch: Number(peer.state.groupContext.epoch) };
  },

  async process({ message }) {
    const state = requireGroup();
    const decoded = decodeWhole(unhex(message, "message"));
    if (decoded.wireformat !== "mls_public_message" && decoded.wireformat !== "mls_private_message") {
      throw driverError("UsageError", `not a group message (${decoded.wireformat})`);
    }
    const result = await processMessage(decoded, state, emptyPskIndex, acceptAll, peer.impl);
    const before = state.groupContext.epoch;
    peer.state = result.newState;
    result.consumed.forEach(zeroOutUint8Array);
    if (result.kind === "applicationMessage") return { kind: "application", plaintext: hex(result.message) };
    if (result.newState.groupContext.epoch !== before) {
      peer.pending = undefined; // the peer's commit won: ours is void (RFC 9420 section 14)
      return { kind: "commit", epoch: Number(result.newState.groupContext.epoch) };
    }
    return { kind: "proposal" };
  },

  async encrypt({ plaintext }) {
    const state = requireGroup();
    const result = await createApplicationMessage(state, unhex(plaintext, "plaintext"), peer.impl);
    peer.state = result.newState;
    result.consumed.forEach(zeroOutUint8Array);
    return {
      message: hex(encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage: result.privateMessage })),
    };
  },

  async export({ label, context, length }) {
    const state = requireGroup();
    if (!Number.isInteger(length) || length < 0 || length > 0xffff) throw new TypeError("length must be a u16");
    const labelText = new TextDecoder("utf-8", { fatal: true }).decode(unhex(label, "label"));
    const secret = await mlsExporter(state.keySchedule.exporterSecret, labelText, unhex(context, "context"), length, peer.impl);
    return { secret: hex(secret) };
  },

  async epoch() {
    return { epoch: Number(requireGroup().groupContext.epoch) };
  },

  async group_id() {
    return { group_id: hex(requireGroup().groupContext.groupId) };
  },

  async ratchet_tree() {
    return { ratchet_tree: hex(encodeRatchetTree(requireGroup().ratchetTree)) };
  },

  async suites() {
    return { suites: { ...ciphersuites } };
  },
};

function describe(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function respond(body) {
  process.stdout.write(`${JSON.stringify(body)}\n`);
}

process.on("unhandledRejection", (reason) => process.stderr.write(`unhandled rejection: ${describe(reason)}\n`));

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  let id = null;
  try {
    const request = JSON.parse(line);
    if (request === null || typeof request !== "object" || Array.isArray(request)) {
      throw new TypeError("a request must be a JSON object");
    }
    id = request.id ?? null;
    const operation = Object.hasOwn(operations, request.op) ? operations[request.op] : undefined;
    if (operation === undefined) throw driverError("UsageError", `unknown op ${JSON.stringify(request.op)}`);
    respond({ id, result: await operation(request) });
  } catch (error) {
    respond({ id, error: describe(error) });
  }
}
