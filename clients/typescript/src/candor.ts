/**
 * Candor's gateway and event feed from TypeScript: a typed-enough client over the committed
 * .proto files (loaded at run time by @grpc/proto-loader, so there is no generated code to keep
 * in step) and a follower of the CANDOR_EVENTS stream (@nats-io/jetstream).
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import * as protobuf from "protobufjs";

type NatsConnection = Awaited<ReturnType<typeof connect>>;

/** Where the committed .proto files are (CANDOR_PROTO_DIR, else the repository's proto/). */
export const PROTO_DIR = process.env.CANDOR_PROTO_DIR ?? path.resolve(__dirname, "..", "..", "..", "proto");
/** The feed's stream and subjects. */
export const EVENTS_STREAM = "CANDOR_EVENTS";
export const EVENTS_PREFIX = "candor.events.v1";
/** A photo may be up to 12 MB; the gateway's messages may be up to 16 MiB. */
const MAX_MESSAGE = 16 * 1024 * 1024;
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  includeDirs: [PROTO_DIR],
};

export interface Candidate {
  rank: number;
  subject_id: string;
  distance: number;
  record_id: string;
}

export interface SearchResponse {
  search_id: string;
  candidates: Candidate[];
  notice: string;
}

export interface AuditRecord {
  sequence: string;
  event: { kind: string; event_id: string; actor: string; case_number: string };
}

export interface ExportCaseResponse {
  case_number: string;
  records: AuditRecord[];
  verification: { ok: boolean; records_checked: string; problem: string };
  exported_by: string;
}

/** One lifecycle event (candor.events.v1.LifecycleEvent), as the feed carries it. */
export interface LifecycleEvent {
  record_sequence: string;
  kind: string;
  event_id: string;
  actor: string;
  case_number: string;
  search_id: string;
  rank: number;
  subject_id: string;
  status: string;
  settled_by_supervisor: boolean;
}

/** The gateway's unary calls with the caller's bearer token, a deadline and a client request id. */
export class Gateway {
  private readonly stub: grpc.Client;

  constructor(
    address: string,
    private readonly token: string,
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  ) {
    const definition = protoLoader.loadSync("candor/gateway/v1/gateway.proto", LOADER_OPTIONS);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the package's shape comes from the .proto
    const loaded = grpc.loadPackageDefinition(definition) as any;
    const Service = loaded.candor.gateway.v1.GatewayService as grpc.ServiceClientConstructor;
    this.stub = new Service(address, credentials, {
      "grpc.max_send_message_length": MAX_MESSAGE,
      "grpc.max_receive_message_length": MAX_MESSAGE,
    });
  }

  /** Call one RPC; a refusal rejects with the gateway's status code and its message for people. */
  call<Reply>(method: string, request: object, deadlineS = 60): Promise<Reply> {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${this.token}`);
    const deadline = new Date(Date.now() + deadlineS * 1000);
    return new Promise((resolve, reject) => {
      const rpc = (this.stub as unknown as Record<string, Function>)[method].bind(this.stub);
      rpc(request, metadata, { deadline }, (error: grpc.ServiceError | null, reply: Reply) => {
        if (error) {
          reject(new Error(`${method} failed: ${grpc.status[error.code]}: ${error.details}`));
        } else {
          resolve(reply);
        }
      });
    });
  }

  /** File a search from a case. The id makes a retry safe: it gets the first answer. */
  search(probe: Buffer, caseNumber: string, purpose: string, authorisation: string): Promise<SearchResponse> {
    return this.call<SearchResponse>("Search", {
      probe_image: probe,
      case_number: caseNumber,
      purpose,
      authorisation_reference: authorisation,
      client_request_id: randomUUID(),
    });
  }

  /** The case's discovery export: its records with the chain's verification. */
  exportCase(caseNumber: string): Promise<ExportCaseResponse> {
    return this.call<ExportCaseResponse>("ExportCase", { case_number: caseNumber });
  }

  close(): void {
    this.stub.close();
  }
}

/** Reads the event feed through one durable consumer of this integration's own. */
export class EventFeed {
  private readonly eventType: protobuf.Type;

  private constructor(private readonly connection: NatsConnection) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin: string, target: string) => path.join(PROTO_DIR, target);
    root.loadSync("candor/events/v1/events.proto", { keepCase: true });
    this.eventType = root.lookupType("candor.events.v1.LifecycleEvent");
  }

  /** Log in to NATS as the integration's user (its password in a file, never on the command line). */
  static async connect(url: string, user: string, passwordFile: string): Promise<EventFeed> {
    const connection = await connect({
      servers: url,
      user,
      pass: readFileSync(passwordFile, "utf8").trim(),
      // The user's permissions allow replies to its own inboxes only.
      inboxPrefix: `_INBOX_${user}`,
      name: "candor-typescript-example",
    });
    return new EventFeed(connection);
  }

  /**
   * Make the durable consumer if it is not there yet: events of these kinds from now on (or from
   * where it left off, when it exists). Made before the search, so the search's events cannot be
   * missed.
   */
  async follow(durable: string, kinds: string[]): Promise<void> {
    // The integration's user may not read the account's JetStream info: skip that check.
    const manager = await jetstreamManager(this.connection, { checkAPI: false });
    try {
      await manager.consumers.info(EVENTS_STREAM, durable);
    } catch {
      await manager.consumers.add(EVENTS_STREAM, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.New,
        filter_subjects: kinds.map((kind) => `${EVENTS_PREFIX}.${kind}`),
      });
    }
  }

  /**
   * Wait for the first event ``wanted`` accepts, acknowledging each event seen (an event of
   * another search is someone else's news: it is acknowledged and passed over). At least once:
   * an event may come twice, with the same record_sequence.
   */
  async waitFor(durable: string, wanted: (event: LifecycleEvent) => boolean, timeoutS: number): Promise<LifecycleEvent> {
    const consumer = await jetstream(this.connection, { checkAPI: false }).consumers.get(EVENTS_STREAM, durable);
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      const batch = await consumer.fetch({ max_messages: 32, expires: 2000 });
      for await (const message of batch) {
        const event = this.eventType.toObject(this.eventType.decode(message.data), {
          longs: String,
          enums: String,
          defaults: true,
        }) as LifecycleEvent;
        message.ack();
        if (wanted(event)) {
          return event;
        }
      }
    }
    throw new Error(`no matching event on ${EVENTS_STREAM} within ${timeoutS} s`);
  }

  async close(): Promise<void> {
    await this.connection.drain();
  }
}
