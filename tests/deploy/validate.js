#!/usr/bin/env node
// Validates Kubernetes objects (multi-document YAML, such as `helm template` prints) against the
// Kubernetes OpenAPI schemas of npm `kubernetes-models` (and the Prometheus Operator's, for
// ServiceMonitors), and also refuses fields the schemas do not know: the schemas allow them, and
// an API server would drop a misspelt `readOnlyRootFileSystem` without a word.
//
//   node validate.js [FILE]        (stdin without FILE)
//
// Prints JSON: {"objects": [every object, parsed], "errors": ["Kind/name: what is wrong", ...]}.
// Exits 1 when there are errors, 2 when it cannot run. The npm packages are found in
// $SLUICE_NPM_DIR/node_modules (scripts/test installs them there).
'use strict';

const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');

const npmDir = process.env.SLUICE_NPM_DIR || path.join(__dirname, '..', '..', 'build', 'npm');
const npmRequire = createRequire(path.join(path.resolve(npmDir), 'node_modules', '.validate.js'));

function fatal(message) {
  process.stderr.write(`validate.js: ${message}\n`);
  process.exit(2);
}

let YAML;
let runValidateFunc;
try {
  YAML = npmRequire('yaml');
  ({runValidateFunc} = npmRequire('@kubernetes-models/validate'));
  // Every model registers its schema's validate function here when its module loads; keep them,
  // so that an object can be validated as it is (the models' constructors copy their input).
  // (By its file: the package exports no subpath; index.js requires this same file.)
  const model = npmRequire(
      path.join(path.dirname(npmRequire.resolve('@kubernetes-models/base')), 'model.js'));
  const register = model.setValidateFunc;
  model.setValidateFunc = (ctor, fn) => {
    ctor.sluiceValidate = fn;
    register(ctor, fn);
  };
} catch (e) {
  fatal(`cannot load the npm packages from ${npmDir}/node_modules (${e.message})`);
}

// apiVersion -> the module of its models.
function modelModule(apiVersion) {
  if (apiVersion.startsWith('monitoring.coreos.com/')) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  }
  return `kubernetes-models/${apiVersion}`;
}

// A copy of `value` in which every object records the keys read from it, and whether its keys
// were listed (maps are: their keys are data, not fields).
function tracked(value, where, records) {
  if (Array.isArray(value)) return value.map((v, i) => tracked(v, `${where}[${i}]`, records));
  if (value === null || typeof value !== 'object') return value;
  const record = {where, keys: Object.keys(value), read: new Set(), listed: false};
  records.push(record);
  const copy = {};
  for (const k of record.keys) copy[k] = tracked(value[k], where ? `${where}.${k}` : k, records);
  return new Proxy(copy, {
    get(target, key, receiver) {
      if (typeof key === 'string') record.read.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === 'string') record.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      record.listed = true;
      return Reflect.ownKeys(target);
    },
    getOwnPropertyDescriptor(target, key) {
      if (typeof key === 'string') record.read.add(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
  });
}

function validate(object) {
  const name = `${object.kind || '?'}/${(object.metadata && object.metadata.name) || '?'}`;
  if (typeof object.apiVersion !== 'string' || typeof object.kind !== 'string') {
    return [`${name}: no apiVersion or kind`];
  }
  let models;
  try {
    models = npmRequire(modelModule(object.apiVersion));
  } catch (e) {
    return [`${name}: unknown apiVersion ${object.apiVersion}`];
  }
  const Model = models[object.kind];
  if (!Model || !Model.sluiceValidate) {
    return [`${name}: unknown kind ${object.kind} in ${object.apiVersion}`];
  }
  const records = [];
  try {
    runValidateFunc(Model.sluiceValidate, tracked(object, '', records));
  } catch (e) {
    return [`${name}: ${e.message}`];
  }
  const errors = [];
  for (const r of records) {
    if (r.listed) continue;
    for (const k of r.keys) {
      if (!r.read.has(k)) errors.push(`${name}: unknown field ${r.where ? `${r.where}.` : ''}${k}`);
    }
  }
  return errors;
}

function main() {
  let text;
  try {
    text = fs.readFileSync(process.argv[2] || 0, 'utf8');
  } catch (e) {
    fatal(e.message);
  }
  const objects = [];
  const errors = [];
  // YAML 1.1, as the Kubernetes API server reads it (0440 is octal there).
  for (const doc of YAML.parseAllDocuments(text, {version: '1.1'})) {
    if (doc.errors.length > 0) {
      errors.push(`YAML: ${doc.errors.map((e) => e.message).join('; ')}`);
      continue;
    }
    const object = doc.toJS();
    if (object === null || object === undefined) continue;
    objects.push(object);
    errors.push(...validate(object));
  }
  process.stdout.write(JSON.stringify({objects, errors}, null, 1) + '\n');
  process.exit(errors.length > 0 ? 1 : 0);
}

main();
