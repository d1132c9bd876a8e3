/**
 * The integration guide's worked example, from a case-management system's side: the case is
 * opened, a probe photo is searched, two reviewers (people, at the review desk) confirm a
 * candidate, the LEAD arrives on the event feed, and the case's export is fetched.
 *
 *   node dist/worked-example.js PROBE.jpg CASE-NUMBER
 *
 * Settings (environment): CANDOR_GATEWAY (host:port), CANDOR_TOKEN (the case-system service
 * account's token), CANDOR_NATS_URL, CANDOR_NATS_USER (default "integration"),
 * CANDOR_NATS_PASSWORD_FILE, CANDOR_AUTHORISATION (the warrant or authorisation reference),
 * CANDOR_WAIT_S (how long to wait for the reviewers, default 600). Each step prints one JSON line.
 */
import { readFileSync } from "node:fs";

import { EventFeed, Gateway } from "./candor";

function setting(name: string, fallback?: string): string {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    throw new Error(`set ${name} (see the comment at the top of worked-example.ts)`);
  }
  return value;
}

function say(step: string, fields: object): void {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

async function main(): Promise<void> {
  const [probePath, caseNumber] = process.argv.slice(2);
  if (!probePath || !caseNumber) {
    throw new Error("usage: node dist/worked-example.js PROBE.jpg CASE-NUMBER");
  }
  const gateway = new Gateway(setting("CANDOR_GATEWAY"), setting("CANDOR_TOKEN"));
  const feed = await EventFeed.connect(
    setting("CANDOR_NATS_URL"),
    setting("CANDOR_NATS_USER", "integration"),
    setting("CANDOR_NATS_PASSWORD_FILE"),
  );
  // One durable consumer per integration: it resumes where it left off after a restart.
  const durable = setting("CANDOR_CONSUMER", "case-system-example");
  try {
    await feed.follow(durable, ["review.confirmed", "review.rejected"]);
    const found = await gateway.search(
      readFileSync(probePath),
      caseNumber,
      "investigation",
      setting("CANDOR_AUTHORISATION", ""),
    );
    say("searched", { search_id: found.search_id, candidates: found.candidates.length });
    if (found.candidates.length === 0) {
      say("done", { lead: false });
      return;
    }
    const outcome = await feed.waitFor(
      durable,
      (event) => event.search_id === found.search_id,
      Number(setting("CANDOR_WAIT_S", "600")),
    );
    say(outcome.kind === "review.confirmed" ? "lead" : "rejected", outcome);
    const exported = await gateway.exportCase(caseNumber);
    say("exported", {
      case_number: exported.case_number,
      records: exported.records.length,
      kinds: exported.records.map((record) => record.event.kind),
      chain_ok: exported.verification.ok,
      exported_by: exported.exported_by,
    });
  } finally {
    gateway.close();
    await feed.close();
  }
}

main().catch((error: Error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exit(1);
});
