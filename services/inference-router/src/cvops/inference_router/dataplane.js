// The router's routing rule inside nginx (njs): authorize, resolve the version, pick the
// upstream group. The router writes the state this reads, one small file per deployment
// (routes/<name>) and per token digest (tokens/<sha256>), so a change needs no reload.
// Same rules and messages as proxy.py (Proxy.authorize, Proxy.resolve, handlers.choose_version).
const fs = require('fs');
const crypto = require('crypto');

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const BUCKETS = 10000;
const TWO_32_MOD_BUCKETS = 7296; // 2**32 % 10000

function read(path) {
    try {
        return JSON.parse(fs.readFileSync(path, 'utf8'));
    } catch (e) {
        return null;
    }
}

function refuse(r, status, message) {
    r.variables.cvops_error = JSON.stringify({ error: message });
    return String(status);
}

// handlers.sticky_bucket: the first 8 bytes of sha256(key), big-endian, modulo 10000
function stickyBucket(key) {
    const hex = crypto.createHash('sha256').update(key).digest('hex');
    const hi = parseInt(hex.slice(0, 8), 16);
    const lo = parseInt(hex.slice(8, 16), 16);
    return ((hi % BUCKETS) * TWO_32_MOD_BUCKETS + (lo % BUCKETS)) % BUCKETS;
}

// cvops.domain.identity.token_refusal, with the parts that do not depend on time precomputed
function tokenRefusal(state, authorization) {
    const m = /^(\S+) (.*)$/.exec(authorization);
    const secret = m ? m[2].trim() : '';
    if (!m || m[1].toLowerCase() !== 'bearer' || !secret) {
        return "the Authorization header must be 'Bearer <token>'";
    }
    const digest = crypto.createHash('sha256').update(secret).digest('hex');
    const token = read(state + '/tokens/' + digest);
    if (token === null) {
        return 'unknown token';
    }
    if (token.before) {
        return token.before;
    }
    if (token.expires && Date.now() / 1000 >= token.expires) {
        return 'token expired';
    }
    return token.after || null;
}

function route(r) {
    const state = r.variables.cvops_state;
    const name = r.variables.cvops_model;
    const d = NAME.test(name) ? read(state + '/routes/' + name) : null;
    if (d === null || !d.public) {
        const authorization = r.headersIn.Authorization;
        if (!authorization) {
            return refuse(r, 401, "model '" + name + "' needs a bearer token");
        }
        const refusal = tokenRefusal(state, authorization);
        if (refusal) {
            return refuse(r, 401, refusal);
        }
    }
    if (d === null || !d.routable) {
        return refuse(r, 404, "Request for unknown model: '" + name + "' is not found");
    }
    const pinned = r.variables.cvops_pinned;
    let version;
    if (pinned) {
        if (!/^[+-]?[0-9]+$/.test(pinned.trim())) {
            return refuse(r, 400, "invalid model version '" + pinned + "'");
        }
        version = parseInt(pinned, 10);
        if (d.versions.indexOf(version) < 0) {
            return refuse(r, 404, "Request for unknown model: '" + name + "' version " + version
                + ' is not served');
        }
    } else if (d.canary === null || d.weight_bp <= 0) {
        version = d.primary;
    } else {
        const key = r.headersIn['X-Request-Key'];
        const bucket = key ? stickyBucket(key) : Math.floor(Math.random() * BUCKETS);
        version = bucket < d.weight_bp ? d.canary : d.primary;
    }
    r.variables.cvops_version = String(version);
    const group = d.groups[String(version)];
    if (!group) {
        return refuse(r, 503, "model '" + name + "' is unavailable: no Triton instance serves it"
            + ' now (starting or restarting); retry');
    }
    r.variables.cvops_upstream = group;
    return '';
}

export default { route };
