// The console in a real browser (Debian's Chromium, driven by playwright-core) against a real
// identity provider (idp.mjs) and the real gateway. Started by console/tests/console/browser.rs,
// which passes:
//   CONSOLE_URL, IDP_URL, INGRESS_URL, RESOURCE, SCREENSHOTS (a directory)
//   PHASE: `approvals` (the gateway alone; prints alice's token for the next step), then `mcp`
//   (MCP_CALL_ID: a tools/call the Rust test made as alice through /mcp, held: bob approves it),
//   then `audit` (once the processor has written the logs and the index of what the first
//   phases did, and the evidence API serves them; MCP_CALL_ID again)
// Exits non-zero, naming the step, when anything is not as it should be.
import { createHash, randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const { PHASE, CONSOLE_URL, IDP_URL, INGRESS_URL, RESOURCE, SCREENSHOTS, MCP_CALL_ID } = process.env;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = 20_000;

let step = 'start';
function check(condition, message) {
  if (!condition) {
    throw new Error(`${step}: ${message}`);
  }
}
const base64url = (bytes) => Buffer.from(bytes).toString('base64url');

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 430, height: 1100 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  return page;
}

/** The provider's own login page: any password, the user is the login. */
async function loginAtIdp(page, user) {
  await page.waitForURL((url) => url.href.startsWith(IDP_URL));
  await page.fill('input[name=login]', user);
  await page.fill('input[name=password]', 'any-password');
  await page.click('button[type=submit]');
}

/** A caller's access token for the gateway, through the provider's public test client. */
async function callerToken(user) {
  const page = await newPage();
  const discovery = await (await fetch(`${IDP_URL}/.well-known/openid-configuration`)).json();
  const verifier = base64url(randomBytes(32));
  const challenge = base64url(createHash('sha256').update(verifier).digest());
  const redirect = 'http://127.0.0.1:9/callback';
  let callback;
  await page.route('http://127.0.0.1:9/**', (route) => {
    callback = route.request().url();
    return route.fulfill({ status: 200, body: 'ok' });
  });
  const authorize = new URL(discovery.authorization_endpoint);
  for (const [key, value] of Object.entries({
    client_id: 'agent-cli', response_type: 'code', redirect_uri: redirect, scope: 'openid',
    code_challenge: challenge, code_challenge_method: 'S256', resource: RESOURCE,
    state: base64url(randomBytes(8)), nonce: base64url(randomBytes(8)),
  })) {
    authorize.searchParams.set(key, value);
  }
  await page.goto(authorize.href);
  await loginAtIdp(page, user);
  await page.waitForURL((url) => url.href.startsWith('http://127.0.0.1:9/'));
  const code = new URL(callback).searchParams.get('code');
  check(code, `no code for ${user}`);
  const answer = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirect,
      code_verifier: verifier, client_id: 'agent-cli', resource: RESOURCE }),
  });
  const tokens = await answer.json();
  check(tokens.access_token, `no access token for ${user}: ${JSON.stringify(tokens)}`);
  await page.context().close();
  return tokens.access_token;
}

async function invokeHeld(token, fn, args) {
  const answer = await fetch(`${INGRESS_URL}/v1/functions/${fn}/invoke`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(args),
  });
  const body = await answer.json();
  check(answer.status === 202 && body.status === 'pending_approval',
    `${fn} should be held: ${answer.status} ${JSON.stringify(body)}`);
  return body.call_id;
}

/** Signs `user` into the console in a new browser context; the page is on the inbox. */
async function signInToConsole(user) {
  const page = await newPage();
  await page.goto(`${CONSOLE_URL}/`);
  check(new URL(page.url()).pathname === '/signin', `not sent to sign in: ${page.url()}`);
  await page.click('#sign-in');
  await loginAtIdp(page, user);
  await page.waitForURL(`${CONSOLE_URL}/`);
  return page;
}

async function flash(page) {
  return (await page.textContent('#flash')) || '';
}

async function approvals() {
  step = 'caller tokens';
  const alice = await callerToken('alice');

  step = 'a held call';
  const refund = await invokeHeld(alice, 'refund', { amount: 2500, customer: 'c-17', card: '4111 1111 1111 1111' });

  step = 'approver signs in and sees it';
  const bob = await signInToConsole('bob');
  const card = bob.locator(`#call-${refund}`);
  await card.waitFor();
  const cardText = await card.innerText();
  // What required approval: the recorded reason and the condition in force.
  for (const expected of ['refund', 'alice', '0 of 1', 'left', 'REDACTED', 'holds', 'args.amount > 1000']) {
    check(cardText.includes(expected), `card lacks ${expected}: ${cardText}`);
  }
  check(!cardText.includes('4111 1111 1111 1111'), 'the card shows an unmasked card number');
  check((await card.locator('code.condition').count()) === 1, 'the condition is not shown once, under why');
  check((await bob.textContent('header.top')).includes('Bob Approver'), 'the header does not name bob');

  step = 'a new call appears without a reload';
  const payout = await invokeHeld(alice, 'payout', { amount: 90000, account: 'acct-9' });
  await bob.locator(`#call-${payout}`).waitFor();
  check((await bob.locator(`#call-${payout}`).innerText()).includes('0 of 2'), 'quorum 2 not shown');
  await bob.screenshot({ path: `${SCREENSHOTS}/inbox.png`, fullPage: true });

  step = 'a deny needs a comment';
  const second = await invokeHeld(alice, 'refund', { amount: 5000, customer: 'c-18' });
  await bob.goto(`${CONSOLE_URL}/approvals/${second}`);
  await bob.click(`#call-${second} button.deny`);
  check((await flash(bob)).includes('A deny needs a comment'), `no comment refusal: ${await flash(bob)}`);
  await bob.fill(`#call-${second} textarea`, 'duplicate of an earlier refund');
  await bob.click(`#call-${second} button.deny`);
  check((await flash(bob)).includes('Your denial is recorded') && (await flash(bob)).includes('denied'),
    `deny not recorded: ${await flash(bob)}`);

  step = 'approve with a comment, with a stale tab and the live inbox left open';
  const inboxTab = await bob.context().newPage();
  await inboxTab.goto(`${CONSOLE_URL}/`);
  await inboxTab.locator(`#call-${refund}`).waitFor();
  const staleTab = await bob.context().newPage();
  await staleTab.goto(`${CONSOLE_URL}/approvals/${refund}`);
  await bob.goto(`${CONSOLE_URL}/approvals/${refund}`);
  await bob.fill(`#call-${refund} textarea`, 'checked with the customer');
  await bob.click(`#call-${refund} button.approve`);
  const approved = await flash(bob);
  check(approved.includes('Your approval is recorded') && /approved|completed|running/.test(approved),
    `approval not recorded: ${approved}`);
  await bob.screenshot({ path: `${SCREENSHOTS}/decided.png`, fullPage: true });

  step = 'a decided call leaves the live inbox without a reload';
  await inboxTab.locator(`#call-${refund}`).waitFor({ state: 'detached' });
  check((await inboxTab.locator(`#call-${payout}`).count()) === 1, 'the payout left the inbox too');

  step = 'a stale page is refused';
  await staleTab.click(`#call-${refund} button.approve`);
  const stale = await flash(staleTab);
  check(stale.includes('Nothing was recorded') && stale.includes('out of date'), `stale page: ${stale}`);

  step = 'a second vote by the same person is refused';
  const payoutTab = await bob.context().newPage();
  await payoutTab.goto(`${CONSOLE_URL}/approvals/${payout}`);
  await bob.goto(`${CONSOLE_URL}/approvals/${payout}`);
  await bob.click(`#call-${payout} button.approve`);
  check((await flash(bob)).includes('1 of 2'), `first of two approvals: ${await flash(bob)}`);
  await payoutTab.click(`#call-${payout} button.approve`);
  check((await flash(payoutTab)).includes('second vote'), `second vote: ${await flash(payoutTab)}`);

  step = 'a form without its CSRF token is refused';
  await bob.goto(`${CONSOLE_URL}/approvals/${payout}`);
  await bob.evaluate(() => document.querySelectorAll('input[name=csrf]').forEach((input) => input.remove()));
  await bob.click(`#call-${payout} button.approve`);
  check((await bob.textContent('#message')).includes('security token'), 'no CSRF refusal');

  step = 'no self-approval';
  const aliceConsole = await signInToConsole('alice');
  check((await aliceConsole.locator(`#call-${payout}`).count()) === 0, 'alice sees her own call in her inbox');
  await aliceConsole.goto(`${CONSOLE_URL}/approvals/${payout}`);
  const refusal = await aliceConsole.textContent('#refusal');
  check(refusal.includes('because you made it'), `self-approval: ${refusal}`);
  check((await aliceConsole.locator('form.decide').count()) === 0, 'a decision form for her own call');

  step = 'a callback with another state is refused';
  // The provider is sent an authorization request whose state is not the one this browser's
  // session holds; it signs bob in and comes back with a valid code and that state.
  const probe = await newPage();
  const seen = [];
  probe.on('request', (request) => seen.push(request.url()));
  const startSignIn = async () => {
    const answer = await probe.context().request.get(`${CONSOLE_URL}/auth/login`, { maxRedirects: 0 });
    check(answer.status() === 303, `sign-in start answered ${answer.status()}`);
    return new URL(answer.headers().location);
  };
  const forged = await startSignIn();
  check(forged.searchParams.get('code_challenge_method') === 'S256', 'no PKCE S256');
  forged.searchParams.set('state', 'forged-state');
  await probe.goto(forged.href);
  await loginAtIdp(probe, 'bob');
  await probe.waitForURL((url) => url.href.startsWith(`${CONSOLE_URL}/auth/callback`));
  const forgedAnswer = await probe.textContent('body');
  check(forgedAnswer.includes('state mismatch'), `forged state: ${forgedAnswer}`);
  await probe.goto(`${CONSOLE_URL}/`);
  check(new URL(probe.url()).pathname === '/signin', 'signed in with a forged state');

  step = 'a replayed code is refused';
  await probe.goto((await startSignIn()).href);
  await probe.waitForURL(`${CONSOLE_URL}/`);
  const callbackUrl = seen.filter((url) => url.startsWith(`${CONSOLE_URL}/auth/callback`)).pop();
  const used = new URL(callbackUrl);
  await probe.goto(callbackUrl);
  const replayed = await probe.textContent('#message');
  check(replayed.includes('used once'), `replayed callback: ${replayed}`);
  // The used code with the state of a new sign-in of this browser.
  const fresh = await startSignIn();
  const replay = new URL(`${CONSOLE_URL}/auth/callback`);
  replay.searchParams.set('code', used.searchParams.get('code'));
  replay.searchParams.set('state', fresh.searchParams.get('state'));
  await probe.goto(replay.href);
  const reused = await probe.textContent('#message');
  check(reused.includes('already used') || reused.includes('did not accept'), `replayed code: ${reused}`);

  step = 'logout ends the session';
  await bob.goto(`${CONSOLE_URL}/`);
  await bob.click('#sign-out');
  await bob.waitForURL(`${CONSOLE_URL}/signed-out`);
  await bob.goto(`${CONSOLE_URL}/`);
  check(new URL(bob.url()).pathname === '/signin', 'still signed in after logout');

  // The Rust test makes an MCP tool call as alice with this token (its audience is RESOURCE,
  // which the gateway's /mcp takes too).
  return { refund, payout, second, alice_token: alice };
}

async function mcp() {
  step = 'the held MCP tool call is in the approver\'s inbox, named as the tool';
  check(MCP_CALL_ID, 'no MCP_CALL_ID');
  const bob = await signInToConsole('bob');
  // Once the live list has replaced the server-rendered one, it changes only with the calls.
  await bob.waitForFunction(() => document.getElementById('live-status').textContent.startsWith('Live: updated'));
  const card = bob.locator(`#call-${MCP_CALL_ID}`);
  await card.waitFor();
  const cardText = await card.innerText();
  for (const expected of ['MCP tool echo on crm', 'mcp:crm__echo', 'alice', '0 of 1', 'left',
    'refund order 7', 'REDACTED', 'needs approval']) {
    check(cardText.includes(expected), `card lacks ${expected}: ${cardText}`);
  }
  check(!cardText.includes('4111 1111 1111 1111'), 'the card shows an unmasked card number');
  await card.scrollIntoViewIfNeeded();
  await bob.screenshot({ path: `${SCREENSHOTS}/mcp.png` });

  step = 'approve the MCP tool call in the inbox';
  await bob.fill(`#call-${MCP_CALL_ID} textarea`, 'agent refund checked');
  await bob.click(`#call-${MCP_CALL_ID} button.approve`);
  // Back on the call's page, which says what was recorded.
  await bob.waitForURL((url) => url.pathname.startsWith('/approvals/'));
  const approved = await flash(bob);
  check(approved.includes('Your approval is recorded'), `approval not recorded: ${approved}`);
  check((await bob.textContent('h3')).includes('MCP tool echo on crm'), 'the call page does not name the tool');
  return {};
}

async function audit() {
  step = 'an approver is not an auditor';
  const bob = await signInToConsole('bob');
  const refused = await bob.goto(`${CONSOLE_URL}/audit?function=refund`);
  check(refused.status() === 403, `bob's search answered ${refused.status()}`);
  check((await bob.textContent('#message')).includes('evidence API'), 'no word from the evidence API');

  step = 'an auditor searches';
  const carol = await signInToConsole('carol');
  await carol.click('nav a[href="/audit"]');
  await carol.fill('#function', 'refund');
  await carol.selectOption('#kind', '');
  await carol.click('#search');
  await carol.locator('#hits').waitFor();
  const hits = await carol.innerText('#hits');
  for (const expected of ['approval_requested', 'approval_decided', 'call_completed', 'alice', 'bob']) {
    check(hits.includes(expected), `the hits lack ${expected}: ${hits}`);
  }
  await carol.screenshot({ path: `${SCREENSHOTS}/search.png`, fullPage: true });

  step = 'paging';
  await carol.goto(`${CONSOLE_URL}/audit?function=refund&limit=2`);
  check((await carol.locator('#hits tr').count()) === 3, 'a page of 2 hits');
  await carol.click('#next-page');
  check((await carol.locator('#hits tr').count()) > 1, 'no hits on the next page');

  step = 'the approved call\'s timeline';
  await carol.goto(`${CONSOLE_URL}/audit?function=refund&kind=call_completed`);
  await carol.click('#hits a.timeline-link');
  await carol.locator('#timeline').waitFor();
  const timeline = await carol.innerText('main');
  for (const expected of ['Complete', 'call_received', 'approval_requested', 'approval_decided',
    'call_forwarded', 'call_completed', 'checked with the customer', 'REDACTED:CREDIT_CARD']) {
    check(timeline.includes(expected), `the timeline lacks ${expected}: ${timeline}`);
  }
  check(!timeline.includes('4111 1111 1111 1111'), 'the timeline shows an unmasked card number');
  await carol.screenshot({ path: `${SCREENSHOTS}/timeline.png`, fullPage: true });

  step = 'the MCP call: every step once, found by its server and tool';
  const kindsOf = async (query) => {
    await carol.goto(`${CONSOLE_URL}/audit?${query}`);
    return (await carol.locator('#hits tr td:nth-child(2)').allInnerTexts()).map((text) => text.trim());
  };
  const count = (kinds, kind) => kinds.filter((text) => text === kind).length;
  const allKinds = await kindsOf(`call_id=${MCP_CALL_ID}`);
  for (const kind of ['call_received', 'approval_requested', 'approval_decided', 'call_forwarded', 'call_completed']) {
    check(count(allKinds, kind) === 1, `${count(allKinds, kind)} ${kind} events for the MCP call: ${allKinds}`);
  }
  const mcpKinds = await kindsOf(`mcp_server=crm&mcp_tool=echo&call_id=${MCP_CALL_ID}`);
  check((await carol.inputValue('#mcp_tool')) === 'echo', 'the form lost the MCP tool filter');
  for (const kind of ['call_forwarded', 'call_completed']) {
    check(count(mcpKinds, kind) === 1, `${count(mcpKinds, kind)} ${kind} events for crm/echo: ${mcpKinds}`);
  }
  check((await carol.innerText('#hits')).includes('MCP tool echo on server crm'), 'the hits do not name the tool');
  await carol.goto(`${CONSOLE_URL}/audit?mcp_outcome=result&call_id=${MCP_CALL_ID}`);
  const results = await carol.locator('#hits tr td:nth-child(2)').allInnerTexts();
  check(results.length === 1 && results[0].trim() === 'call_completed', `outcome result: ${results}`);
  await carol.click('#hits a.timeline-link');
  await carol.locator('#timeline').waitFor();
  const mcpTimeline = await carol.innerText('main');
  for (const expected of ['Complete', 'MCP tool', 'tool echo of the MCP server crm', 'method tools/call',
    'outcome result', 'agent refund checked', 'REDACTED']) {
    check(mcpTimeline.includes(expected), `the MCP timeline lacks ${expected}: ${mcpTimeline}`);
  }
  check(!mcpTimeline.includes('4111 1111 1111 1111'), 'the MCP timeline shows an unmasked card number');

  step = 'an event\'s proof';
  await carol.click('#timeline a[href^="/audit/proofs/"]');
  check((await carol.textContent('#proof-status')).includes('served an inclusion proof'), 'no proof');
  check((await carol.textContent('#verify-command')).trim() === 'callproof-verify proof --key log.vkey entry proof',
    'not the verify command');
  for (const file of ['entry', 'proof']) {
    const link = await carol.getAttribute(`a[download="${file}"]`, 'href');
    const answer = await carol.context().request.get(`${CONSOLE_URL}${link}`);
    check(answer.status() === 200 && (await answer.body()).length > 0, `${file} download: ${answer.status()}`);
  }

  step = 'logs and integrity';
  await carol.goto(`${CONSOLE_URL}/audit/logs`);
  await carol.click('#run-integrity');
  check((await carol.textContent('#integrity')).includes('Every log verified'), 'integrity not verified');

  step = 'the report and the bundle';
  const day = 24 * 3600 * 1000;
  const from = new Date(Date.now() - day).toISOString().replace(/\.\d+Z$/, 'Z');
  const to = new Date(Date.now() + day).toISOString().replace(/\.\d+Z$/, 'Z');
  await carol.goto(`${CONSOLE_URL}/audit/report?from=${from}&to=${to}`);
  check((await carol.textContent('#bundle-command')).includes('callproof-verify bundle --key log.vkey'), 'no bundle command');
  const bundle = await carol.getAttribute('#report-links a[download]', 'href');
  const archive = await carol.context().request.get(`${CONSOLE_URL}${bundle}`);
  const bytes = await archive.body();
  check(archive.status() === 200 && bytes[0] === 0x1f && bytes[1] === 0x8b, `bundle: ${archive.status()}`);
  await carol.click('#report-links a:text("The report")');
  check((await carol.textContent('body')).includes('CC8.1'), 'the report page lacks CC8.1');
  await carol.screenshot({ path: `${SCREENSHOTS}/report.png`, fullPage: true });
  return {};
}

try {
  const phases = { approvals, mcp, audit };
  check(phases[PHASE], `no phase ${PHASE}`);
  const result = await phases[PHASE]();
  console.log(JSON.stringify({ ok: true, phase: PHASE, ...result }));
  await browser.close();
} catch (error) {
  console.error(`FAILED ${error.message}`);
  await browser.close();
  process.exit(1);
}
