// A real OpenID Connect provider (the npm package oidc-provider) for FHIRseal's interop tests
// (crates/smart/tests/interop.rs). It issues JWT access tokens (RFC 9068, RS256, keys generated at
// start) for the FHIR base given as a resource indicator (RFC 8707), with SMART claims added:
// `fhirUser`, `patient` and SMART scopes in `scope`.
//
// Usage: node provider.mjs --modules DIR --resource FHIR_BASE [--resource OTHER]... [--port N]
//   --modules   the folder whose node_modules holds oidc-provider (scripts/interop-setup installs it
//               into .cache/interop-node); default: FHIRSEAL_INTEROP_NODE_DIR, then this folder
//   --resource  a resource server the provider issues tokens for; the first is the default
//   --port      the port on 127.0.0.1 (default 0: any free port)
// Environment: FHIRSEAL_INTEROP_CLIENT_SECRET, the secret of the confidential client
//   `fhirseal-interop-backend` (client_credentials, client_secret_basic). Required.
//
// Clients:
//   fhirseal-interop-backend  confidential, grant client_credentials
//   fhirseal-interop-app      public, authorization_code + PKCE S256 (and refresh_token), redirect
//                             http://127.0.0.1/callback, through the library's development login and
//                             consent pages (any login name and password are accepted: test only)
//
// Prints `READY <issuer>` on stdout once listening, and exits when stdin closes, so a test that
// drops its end of the pipe leaves no process behind.

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SMART_SCOPES = [
  'patient/Observation.rs',
  'patient/Patient.rs',
  'user/Observation.rs',
  'system/Observation.rs',
  'launch/patient',
  'fhirUser',
  'offline_access',
];
const PATIENT_ID = '123';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { port: 0, resources: [], modules: process.env.FHIRSEAL_INTEROP_NODE_DIR };
  for (let i = 0; i < argv.length; i += 1) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--port': args.port = Number(value); i += 1; break;
      case '--resource': args.resources.push(value); i += 1; break;
      case '--modules': args.modules = value; i += 1; break;
      default: fail(`unknown argument ${argv[i]}`);
    }
  }
  if (args.resources.length === 0 || args.resources.some((r) => !/^https?:\/\//.test(r ?? ''))) {
    fail('at least one --resource http(s) URL is required');
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) fail('bad --port');
  args.modules ??= dirname(fileURLToPath(import.meta.url));
  return args;
}

// oidc-provider is imported from the installed folder, not from beside this file, so the source
// tree needs no node_modules.
async function importProvider(modules) {
  const require = createRequire(join(modules, 'package.json'));
  let entry;
  try {
    entry = require.resolve('oidc-provider');
  } catch {
    fail(`oidc-provider is not installed under ${modules}: run scripts/interop-setup`);
  }
  return import(pathToFileURL(entry).href);
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function configuration(args, secret) {
  const [defaultResource] = args.resources;
  return {
    clients: [
      {
        client_id: 'fhirseal-interop-backend',
        client_secret: secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: SMART_SCOPES.join(' '),
      },
      {
        client_id: 'fhirseal-interop-app',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        token_endpoint_auth_method: 'none',
        scope: ['openid', ...SMART_SCOPES].join(' '),
      },
    ],
    scopes: ['openid', ...SMART_SCOPES],
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    jwks: { keys: [signingKey()] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? defaultResource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (!args.resources.includes(resource)) throw new errors.InvalidTarget();
          return {
            scope: SMART_SCOPES.join(' '),
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, fhirUser: `Practitioner/${sub}` }),
    }),
    extraTokenClaims: async (_ctx, token) => ({
      fhirUser: `Practitioner/${token.accountId ?? token.clientId}`,
      patient: PATIENT_ID,
    }),
    ttl: {
      AccessToken: 300,
      AuthorizationCode: 60,
      ClientCredentials: 300,
      Grant: 3600,
      IdToken: 300,
      Interaction: 600,
      RefreshToken: 3600,
      Session: 3600,
    },
  };
}

const args = parseArgs(process.argv.slice(2));
const secret = process.env.FHIRSEAL_INTEROP_CLIENT_SECRET;
if (!secret) fail('FHIRSEAL_INTEROP_CLIENT_SECRET is not set');
const { default: Provider, errors } = await importProvider(args.modules);

const server = createServer();
server.listen(args.port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration(args, secret));
  provider.on('server_error', (_ctx, err) => process.stderr.write(`provider.mjs: ${err.stack}\n`));
  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => fail(`cannot listen: ${err.message}`));

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
