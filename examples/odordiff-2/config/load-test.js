// The guide's performance validation: 50 virtual users for 5 minutes against the API, failing
// the run when p95 latency or the error rate break the alert thresholds.
import http from 'k6/http';
import { check, sleep } from 'k6';

export const options = {
  thresholds: {
    http_req_duration: ['p(95)<2000'],
    http_req_failed: ['rate<0.05'],
  },
};

const target = __ENV.TARGET_URL;

export default function () {
  const health = http.get(`${target}/health`);
  check(health, { 'health is 200': (r) => r.status === 200 });
  const res = http.post(
    `${target}/generate`,
    JSON.stringify({ prompt: 'fresh citrus with a woody base', num_molecules: 4 }),
    { headers: { 'Content-Type': 'application/json' } },
  );
  check(res, { 'generate is 200': (r) => r.status === 200 });
  sleep(1);
}
