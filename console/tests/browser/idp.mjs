// The identity provider of the console's browser test: panva's node-oidc-provider (OpenID
// Certified), configured here and nowhere else. Usage:
//   node idp.mjs PORT CONSOLE_URL RESOURCE
// Prints "ready" once it listens. Clients:
//   callproof-console  confidential (client_secret_basic), PKCE required, redirect CONSOLE_URL/auth/callback
//   agent-cli          public, PKCE required: how the test gets a caller's token for the gateway
// Access tokens for RESOURCE (RFC 8707 resource indicator) are JWTs (RS256) with the person's
// groups, which the gateway and the evidence API verify as any bearer token.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, consoleUrl, resource] = process.argv.slice(2);
if (!port || !consoleUrl || !resource) {
  console.error('usage: node idp.mjs PORT CONSOLE_URL RESOURCE');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

export const USERS = {
  alice: { name: 'Alice Caller', email: 'alice@example.com', groups: ['treasury', 'support'] },
  bob: { name: 'Bob Approver', email: 'bob@example.com', groups: ['treasury'] },
  carol: { name: 'Carol Auditor', email: 'carol@example.com', groups: ['auditor'] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'browser-test-rs256', alg: 'RS256', use: 'sig' };

const configuration = {
  clients: [
    {
      client_id: 'callproof-console',
      client_secret: 'console-secret',
      redirect_uris: [`${consoleUrl}/auth/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'agent-cli',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: user.name, email: user.email, groups: user.groups };
      },
    };
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'AccessToken' && USERS[token.accountId]) {
      return { groups: USERS[token.accountId].groups };
    }
    return undefined;
  },
  // Consent is given on the person's behalf: the console is the organisation's own client.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['name', 'email', 'groups']);
    grant.addResourceScope(resource, 'callproof');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) {
          throw new Error(`unknown resource ${indicator}`);
        }
        return {
          scope: 'callproof',
          audience: resource,
          accessTokenTTL: 15 * 60,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  ttl: { AccessToken: 15 * 60, AuthorizationCode: 60, IdToken: 15 * 60, Interaction: 600, Session: 3600, Grant: 3600 },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('server_error', error));
provider.on('grant.error', (ctx, error) => console.error('grant.error', error.message, error.error_description || ''));
provider.listen(Number(port), '127.0.0.1', () => {
  console.log('ready');
});
