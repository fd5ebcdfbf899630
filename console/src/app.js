// kgate console: a small single-page app over kgate console's /api/. Client-side
// routing (/nodes, /approvals[/NAME], /sessions[/ID]) with the History API; the
// approvals arrive live over Server-Sent Events; exec/attach streams play in the
// asciinema player, bundled (no CDN).
import * as AsciinemaPlayer from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import './app.css';

const csrf = document.querySelector('meta[name="kgate-csrf"]').content;
const mode = document.querySelector('meta[name="kgate-mode"]').content;
const main = document.getElementById('main');

// ---- helpers ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-Kgate-Csrf'] = csrf;
  }
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!res.ok) {
    if (res.status === 401 && mode === 'viewer-token') showSignIn();
    throw new ApiError(res.status, (data && data.message) || res.statusText);
  }
  return data;
}

/** `h('td', {class: 'x'}, 'text', child)`: an element. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows),
  );
}

const when = (ts) => {
  if (!ts) return '-';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
};
const clock = (ts) => {
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toISOString().slice(11, 23);
};
const ago = (ts) => {
  const s = Math.round((Date.now() - new Date(ts)) / 1000);
  if (isNaN(s)) return '';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
};
const badge = (text, kind) => h('span', { class: `badge ${kind || text.toLowerCase()}` }, text);
const errorBox = (e) => h('div', { class: 'error', role: 'alert' }, e.message || String(e));

// ---- routing ------------------------------------------------------------------

let cleanup = [];
function onLeave(fn) {
  cleanup.push(fn);
}

function navigate(path, replace = false) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a[href^="/"]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || a.target) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);

function render() {
  cleanup.forEach((fn) => fn());
  cleanup = [];
  const path = location.pathname;
  const section = path.split('/')[1] || 'approvals';
  document.querySelectorAll('[data-nav]').forEach((a) => {
    a.classList.toggle('active', a.dataset.nav === section);
  });
  main.replaceChildren();
  let m;
  if (path === '/' || path === '/approvals') approvalsPage(null);
  else if ((m = path.match(/^\/approvals\/(.+)$/))) approvalsPage(decodeURIComponent(m[1]));
  else if (path === '/nodes') nodesPage();
  else if (path === '/sessions') sessionsPage();
  else if ((m = path.match(/^\/sessions\/(.+)$/))) sessionPage(decodeURIComponent(m[1]));
  else if (path === '/signin') showSignIn();
  else main.append(h('h1', {}, 'Not found'), h('p', {}, `No page ${path}.`));
}

// ---- sign-in (non-loopback consoles) -------------------------------------------

function showSignIn() {
  cleanup.forEach((fn) => fn());
  cleanup = [];
  const input = h('textarea', { name: 'token', rows: 4, placeholder: 'Bearer token', required: true });
  const err = h('div');
  const form = h(
    'form',
    {
      class: 'signin',
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api('/api/signin', { method: 'POST', body: { token: input.value } });
          input.value = '';
          whoami();
          navigate(location.pathname === '/signin' ? '/' : location.pathname, true);
        } catch (e) {
          err.replaceChildren(errorBox(e));
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'This console acts with your own credentials: paste a bearer token the API server accepts (for example ', h('code', {}, 'kubectl create token'), ' or your OIDC ID token).'),
    input,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    err,
  );
  main.replaceChildren(form);
}

async function whoami() {
  const el = document.getElementById('whoami');
  try {
    const me = await api('/api/whoami');
    el.replaceChildren(
      me.user ? h('span', {}, 'signed in as ', h('b', {}, me.user)) : '',
      mode === 'viewer-token'
        ? h('button', { class: 'link', onclick: async () => { await api('/api/signout', { method: 'POST' }); location.reload(); } }, 'sign out')
        : '',
    );
  } catch {
    el.replaceChildren();
  }
}

// ---- live approvals --------------------------------------------------------------

// One stream for the whole app: the nav's pending count and the Approvals page.
const live = { approvals: null, error: null, listeners: new Set(), source: null };

function connectApprovals() {
  if (live.source) return;
  const source = new EventSource('/api/approvals/events');
  live.source = source;
  source.addEventListener('approvals', (ev) => {
    live.approvals = JSON.parse(ev.data);
    live.error = null;
    live.listeners.forEach((fn) => fn());
    const pending = live.approvals.filter((a) => phase(a) === 'Pending').length;
    const count = document.getElementById('pending-count');
    count.hidden = pending === 0;
    count.textContent = pending;
  });
  source.addEventListener('failure', (ev) => {
    live.error = JSON.parse(ev.data).message;
    live.listeners.forEach((fn) => fn());
  });
  source.onerror = () => {
    // EventSource reconnects by itself; a 401 (signed out) closes it for good.
    if (source.readyState === EventSource.CLOSED) live.source = null;
  };
}

const phase = (a) => (a.status && a.status.phase) || 'Pending';

function target(r) {
  let s = r.resource || r.path;
  if (r.subresource) s += `/${r.subresource}`;
  if (r.name) s = `${r.resource}/${r.name}${r.subresource ? '/' + r.subresource : ''}`;
  if (r.namespace) s += ` -n ${r.namespace}`;
  return s;
}

function approvalsPage(selected) {
  connectApprovals();
  const status = h('div');
  const list = h('div');
  const detail = h('div');
  main.append(
    h('h1', {}, 'Approvals'),
    h('p', { class: 'hint' }, 'Held requests wait here for a decision, pending first. Approve, optionally for a window in which repeats of the same request pass (90s, 10m, 2h), or deny with a reason the requester sees.'),
    status,
    detail,
    list,
  );
  const rows = new Map(); // name -> [resourceVersion, tr]

  function draw() {
    status.replaceChildren(live.error ? errorBox({ message: `watching approvals: ${live.error}` }) : '');
    if (live.approvals === null) {
      list.replaceChildren(h('p', { class: 'empty' }, 'Loading…'));
      return;
    }
    const items = [...live.approvals];
    const pending = items.filter((a) => phase(a) === 'Pending');
    const decided = items.filter((a) => phase(a) !== 'Pending').reverse();
    const ordered = [...pending, ...decided];
    const trs = ordered.map((a) => {
      const name = a.metadata.name;
      const version = `${a.metadata.resourceVersion}`;
      const kept = rows.get(name);
      if (kept && kept[0] === version) return kept[1];
      const tr = approvalRow(a, name === selected);
      rows.set(name, [version, tr]);
      return tr;
    });
    const tbl = list.querySelector('table');
    if (tbl && trs.length) {
      tbl.tBodies[0].replaceChildren(...trs);
    } else {
      list.replaceChildren(
        table(['Name', 'Phase', 'Requested by', 'Request', 'Rule', 'When', 'Decision'], trs, 'No held requests.'),
      );
    }
    if (selected) {
      const a = items.find((x) => x.metadata.name === selected);
      detail.replaceChildren(a ? approvalDetail(a) : h('p', { class: 'empty' }, `No approval ${selected}.`));
    }
  }
  live.listeners.add(draw);
  onLeave(() => live.listeners.delete(draw));
  draw();
}

function approvalRow(a, selected) {
  const name = a.metadata.name;
  const s = a.spec;
  const p = phase(a);
  const decision = h('td', { class: 'decision' });
  if (p === 'Pending') {
    const grant = h('input', { class: 'grant-for', placeholder: 'for (10m)', size: 8, 'aria-label': 'approve for' });
    const reason = h('input', { class: 'reason', placeholder: 'reason', size: 16, 'aria-label': 'reason' });
    const err = h('div', { class: 'row-error' });
    const decide = (verb) => async () => {
      try {
        decision.querySelectorAll('button').forEach((b) => (b.disabled = true));
        await api(`/api/approvals/${encodeURIComponent(name)}/${verb}`, {
          method: 'POST',
          body: { for: verb === 'approve' ? grant.value : undefined, reason: reason.value },
        });
      } catch (e) {
        err.replaceChildren(errorBox(e));
        decision.querySelectorAll('button').forEach((b) => (b.disabled = false));
      }
    };
    decision.append(
      h('div', { class: 'actions' },
        grant,
        h('button', { class: 'approve primary', onclick: decide('approve') }, 'Approve'),
        reason,
        h('button', { class: 'deny danger', onclick: decide('deny') }, 'Deny'),
      ),
      err,
    );
  } else {
    decision.append(
      s.decidedBy ? h('div', { class: 'decided-by' }, `${s.decision === 'deny' ? 'denied' : 'approved'} by ${s.decidedBy}`) : '',
      s.grantFor ? h('div', { class: 'grant' }, `repeats pass for ${s.grantFor}`) : '',
      s.reason ? h('div', { class: 'reason-text' }, `reason: ${s.reason}`) : '',
      a.status && a.status.message && !s.decidedBy ? h('div', { class: 'muted' }, a.status.message) : '',
    );
  }
  return h(
    'tr',
    { 'data-name': name, 'data-phase': p, class: selected ? 'selected' : '' },
    h('td', {}, h('a', { href: `/approvals/${encodeURIComponent(name)}` }, name)),
    h('td', {}, badge(p)),
    h('td', {}, h('div', {}, s.user), h('div', { class: 'muted' }, s.workload)),
    h('td', {}, h('code', {}, `${s.request.verb} ${target(s.request)}`)),
    h('td', {}, s.rule),
    h('td', { title: a.metadata.creationTimestamp }, ago(a.metadata.creationTimestamp)),
    decision,
  );
}

function approvalDetail(a) {
  const s = a.spec;
  const dl = h('dl', { class: 'facts' });
  const fact = (k, v) => v && dl.append(h('dt', {}, k), h('dd', {}, v));
  fact('Name', a.metadata.name);
  fact('Phase', phase(a));
  fact('User', s.user);
  fact('Groups', (s.groups || []).join(', '));
  fact('Workload', s.workload);
  fact('Process', s.process);
  fact('Node', s.node);
  fact('Request', `${s.request.verb} ${s.request.path}`);
  fact('Rule', s.rule);
  fact('Approvers', (s.approvers || []).join(', '));
  fact('Expires', when(s.expiresAt));
  fact('Decided by', s.decidedBy);
  fact('Reason', s.reason);
  fact('Grant until', a.status && a.status.grantUntil && when(a.status.grantUntil));
  return h('section', { class: 'card' }, dl, s.body ? h('details', { open: true }, h('summary', {}, 'Request body'), h('pre', {}, s.body)) : '');
}

// ---- nodes -------------------------------------------------------------------------

function nodesPage() {
  const body = h('div');
  main.append(
    h('h1', {}, 'Nodes'),
    h('p', { class: 'hint' }, "Every node's agent, from its heartbeat Lease (as kgate status shows it), refreshed every 5 seconds."),
    body,
  );
  const yes = (v) => (v === true ? badge('yes', 'ok') : badge('no', 'bad'));
  async function load() {
    try {
      const rows = await api('/api/nodes');
      body.replaceChildren(
        table(
          ['Node', 'Enforcing', 'Ready', 'Targets', 'Policy', 'Approvals held', 'Cert expiry', 'Version', 'Seen', 'Error'],
          rows.map((r) => {
            const s = r.status || {};
            const seen = r.seenSeconds == null ? '-' : `${r.seenSeconds}s`;
            return h(
              'tr',
              { 'data-node': r.node },
              h('td', {}, r.node),
              h('td', {}, r.status ? yes(s.enforcing) : yes(false)),
              h('td', {}, r.status ? yes(s.ready) : yes(false)),
              h('td', {}, r.status ? (s.targets || []).length : '-'),
              h('td', {}, r.status ? s.policyGeneration : '-'),
              h('td', {}, r.status ? s.approvalsHeld : '-'),
              h('td', {}, s.certNotAfter ? new Date(s.certNotAfter * 1000).toISOString().slice(0, 10) : '-'),
              h('td', {}, s.version || '-'),
              h('td', {}, seen),
              h('td', { class: 'error-text' }, r.error || ''),
            );
          }),
          'No nodes and no kgate heartbeats.',
        ),
      );
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  }
  load();
  const timer = setInterval(load, 5000);
  onLeave(() => clearInterval(timer));
}

// ---- sessions ------------------------------------------------------------------------

const PAGE = 100;

function sessionsPage() {
  const params = new URLSearchParams(location.search);
  const field = (name, placeholder) =>
    h('label', {}, name, h('input', { name, placeholder, value: params.get(name) || '' }));
  const form = h(
    'form',
    {
      class: 'filters',
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams();
        for (const [k, v] of new FormData(form)) if (v.trim()) q.set(k, v.trim());
        navigate(`/sessions${q.toString() ? '?' + q : ''}`);
      },
    },
    field('user', 'system:serviceaccount:*'),
    field('pod', 'namespace/name*'),
    field('since', '1h'),
    field('node', 'node*'),
    h('button', { type: 'submit', class: 'primary' }, 'Filter'),
  );
  const body = h('div');
  main.append(h('h1', {}, 'Sessions'), form, body);
  const offset = Number(params.get('offset') || 0);
  const q = new URLSearchParams(params);
  q.set('offset', offset);
  q.set('limit', PAGE);
  api(`/api/sessions?${q}`)
    .then((page) => {
      const pageLink = (to, label) => {
        const p = new URLSearchParams(params);
        p.set('offset', to);
        return h('a', { href: `/sessions?${p}`, class: 'button' }, label);
      };
      const nav = h(
        'div',
        { class: 'pager' },
        offset > 0 ? pageLink(Math.max(0, offset - PAGE), '← Newer') : '',
        h('span', {}, page.total ? `${offset + 1}–${offset + page.sessions.length} of ${page.total}` : ''),
        offset + PAGE < page.total ? pageLink(offset + PAGE, 'Older →') : '',
      );
      // Nodes whose agent did not answer: their sessions are missing from the list.
      const missing = (page.unreachable || []).map((u) =>
        h('div', { class: 'error', role: 'alert', 'data-unreachable': u.node }, `node ${u.node} did not answer: ${u.error}`),
      );
      body.replaceChildren(
        ...missing,
        table(
          ['Session', 'Node', 'User', 'Workload', 'Start', 'End', 'Requests', 'Refused', 'Streams'],
          page.sessions.map((s) =>
            h(
              'tr',
              { 'data-session': s.id },
              h('td', {}, h('a', { href: `/sessions/${encodeURIComponent(s.id)}` }, h('code', {}, s.id))),
              h('td', {}, s.node),
              h('td', {}, s.user || '-'),
              h('td', {}, s.issuer ? `oidc ${s.issuer}` : s.workload || '-'),
              h('td', {}, when(s.start)),
              h('td', {}, when(s.end)),
              h('td', { class: 'num' }, s.requests),
              h('td', { class: 'num' }, s.refused ? badge(String(s.refused), 'bad') : '0'),
              h('td', { class: 'num' }, (s.streams || []).length),
            ),
          ),
          'No sessions match.',
        ),
        nav,
      );
    })
    .catch((e) => body.replaceChildren(errorBox(e)));
}

function sessionPage(id) {
  const body = h('div', {}, h('p', { class: 'empty' }, 'Loading…'));
  main.append(h('p', {}, h('a', { href: '/sessions' }, '← Sessions')), body);
  const players = [];
  onLeave(() => players.forEach((p) => p.dispose && p.dispose()));
  api(`/api/sessions/${encodeURIComponent(id)}`)
    .then(({ node, session: s, timeline }) => {
      const dl = h('dl', { class: 'facts' });
      const fact = (k, v) => v && dl.append(h('dt', {}, k), h('dd', {}, v));
      fact('User', s.user);
      fact('Groups', (s.groups || []).join(', '));
      fact('Workload', s.issuer ? `oidc ${s.issuer}` : s.workload);
      fact('Acting as', (s.actingAs || []).join(', '));
      fact('Node', node);
      fact('Connection', s.connection);
      fact('Time', `${when(s.start)} – ${when(s.end)}`);
      fact('Requests', `${s.requests} (${s.refused} refused)`);
      const rows = timeline.map((r) => {
        const bodies = [];
        if (r.requestObject) bodies.push(h('details', {}, h('summary', {}, 'request body'), h('pre', {}, JSON.stringify(r.requestObject, null, 2))));
        if (r.responseObject) bodies.push(h('details', {}, h('summary', {}, 'response body'), h('pre', {}, JSON.stringify(r.responseObject, null, 2))));
        const refused = r.decision === 'deny' || (r.code && r.code >= 400);
        return h(
          'tr',
          { class: refused ? 'refused' : '', 'data-audit': r.auditId },
          h('td', { title: r.time }, clock(r.time)),
          h('td', {}, r.verb),
          h('td', {}, h('code', {}, r.resource), bodies),
          h('td', {}, badge(r.decision, r.decision), r.rule ? h('span', { class: 'muted' }, ` ${r.rule}`) : '', r.approval ? h('div', {}, h('a', { href: `/approvals/${encodeURIComponent(r.approval)}` }, r.approval)) : ''),
          h('td', { class: 'num' }, r.code ?? (r.unfinished ? 'no answer recorded' : '-'), r.message ? h('div', { class: 'muted' }, r.message) : ''),
          h('td', { class: 'num' }, r.latencyMs == null ? '-' : `${r.latencyMs.toFixed(1)} ms`),
        );
      });
      const streams = (s.streams || []).map((st) => {
        const head = h('h3', {}, `${st.subresource} `, h('code', {}, st.auditID), h('span', { class: 'muted' }, ` ${st.transport}${st.protocol ? ' ' + st.protocol : ''}, ${st.seconds.toFixed(1)} s`));
        if (st.subresource === 'portforward') {
          return h('section', { class: 'card stream' }, head, h('p', {}, `${st.portStreams} port-forward streams; bytes: ${JSON.stringify(st.bytes)}`));
        }
        const el = h('div', { class: 'player', 'data-stream': st.auditID });
        const notes = [];
        if (!st.closed) notes.push('open, or its last chunk is lost');
        if ((st.missingChunks || []).length) notes.push(`${st.missingChunks.length} chunks missing`);
        if (st.captureError) notes.push(`capture failed: ${st.captureError}`);
        queueMicrotask(() => {
          const url = `/api/sessions/${encodeURIComponent(s.id)}/streams/${encodeURIComponent(st.auditID)}/asciicast`;
          players.push(AsciinemaPlayer.create(url, el, { autoPlay: true, idleTimeLimit: 1, fit: 'width', terminalFontSize: '13px' }));
        });
        return h('section', { class: 'card stream' }, head, notes.length ? h('p', { class: 'warn' }, notes.join('; ')) : '', el);
      });
      body.replaceChildren(
        h('h1', {}, 'Session ', h('code', {}, s.id)),
        h('section', { class: 'card' }, dl),
        h('h2', {}, 'Requests'),
        table(['Time (UTC)', 'Verb', 'Resource', 'Decision', 'Status', 'Latency'], rows, 'No requests.'),
        streams.length ? h('h2', {}, 'Streams') : '',
        ...streams,
      );
    })
    .catch((e) => body.replaceChildren(errorBox(e)));
}

// ---- start ----------------------------------------------------------------------------

whoami();
render();
