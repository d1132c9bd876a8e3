// The integration guide's worked example in Go, from a case-management system's side: search a
// probe photo for a case, wait for the candidate's LEAD on the event feed, fetch the case's export.
//
//	worked-example API.binpb PROBE.jpg CASE-NUMBER
//
// API.binpb is the API's descriptor set (`buf build` of proto/; `make test` makes it): the messages
// are built from it at run time (dynamicpb), so there is no generated code to keep in step. It
// builds with Debian's Go packages alone (golang-google-grpc-dev, golang-google-protobuf-dev,
// golang-github-nats-io-go-nats-dev). Settings, as the TypeScript example's: CANDOR_GATEWAY,
// CANDOR_TOKEN (the case-system service account's), CANDOR_NATS_URL, CANDOR_NATS_USER,
// CANDOR_NATS_PASSWORD_FILE, CANDOR_AUTHORISATION, CANDOR_WAIT_S. Each step prints one JSON line.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

const (
	service      = "/candor.gateway.v1.GatewayService/"
	eventsStream = "CANDOR_EVENTS"
	maxMessage   = 16 << 20
)

// codec marshals with the protobuf API v2, which dynamic messages need (Debian's grpc-go still
// defaults to the v1 API).
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (codec) Unmarshal(data []byte, v interface{}) error {
	return proto.Unmarshal(data, v.(proto.Message))
}
func (codec) Name() string { return "proto" }

func setting(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	if fallback == "" {
		fail(fmt.Errorf("set %s (see the comment at the top of main.go)", name))
	}
	return fallback
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "error: %v\n", err)
	os.Exit(1)
}

func say(step string, fields map[string]interface{}) {
	fields["step"] = step
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

// api holds the messages of the descriptor set.
type api struct{ files *protoregistry.Files }

func loadAPI(path string) api {
	raw, err := ioutil.ReadFile(path)
	if err != nil {
		fail(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		fail(fmt.Errorf("%s is not a descriptor set: %v", path, err))
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		fail(err)
	}
	return api{files}
}

func (a api) message(name string) *dynamicpb.Message {
	found, err := a.files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		fail(err)
	}
	return dynamicpb.NewMessage(found.(protoreflect.MessageDescriptor))
}

// fill sets a message's fields from protobuf's JSON mapping.
func fill(message *dynamicpb.Message, fields map[string]interface{}) {
	text, _ := json.Marshal(fields)
	if err := (protojson.UnmarshalOptions{}).Unmarshal(text, message); err != nil {
		fail(err)
	}
}

// asMap reads a message back as protobuf's JSON mapping, field names as in the .proto.
func asMap(message proto.Message) map[string]interface{} {
	text, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(message)
	if err != nil {
		fail(err)
	}
	fields := map[string]interface{}{}
	_ = json.Unmarshal(text, &fields)
	return fields
}

func requestID() string {
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	return hex.EncodeToString(raw)
}

func main() {
	if len(os.Args) != 4 {
		fail(fmt.Errorf("usage: worked-example API.binpb PROBE.jpg CASE-NUMBER"))
	}
	encoding.RegisterCodec(codec{})
	spec, probePath, caseNumber := loadAPI(os.Args[1]), os.Args[2], os.Args[3]
	probe, err := ioutil.ReadFile(probePath)
	if err != nil {
		fail(err)
	}
	wait, _ := strconv.Atoi(setting("CANDOR_WAIT_S", "600"))

	// The feed first, so the search's outcome cannot be missed: a durable consumer of our own.
	password, err := ioutil.ReadFile(setting("CANDOR_NATS_PASSWORD_FILE", ""))
	if err != nil {
		fail(err)
	}
	user := setting("CANDOR_NATS_USER", "integration")
	nc, err := nats.Connect(setting("CANDOR_NATS_URL", ""), nats.UserInfo(user, strings.TrimSpace(string(password))),
		nats.CustomInboxPrefix("_INBOX_"+user), nats.Name("candor-go-example"))
	if err != nil {
		fail(err)
	}
	defer nc.Drain()
	js, err := nc.JetStream()
	if err != nil {
		fail(err)
	}
	durable := setting("CANDOR_CONSUMER", "case-system-go-example")
	const reviews = "candor.events.v1.review.*"
	if _, err := js.ConsumerInfo(eventsStream, durable); err != nil {
		_, err = js.AddConsumer(eventsStream, &nats.ConsumerConfig{
			Durable:       durable,
			AckPolicy:     nats.AckExplicitPolicy,
			DeliverPolicy: nats.DeliverNewPolicy,
			FilterSubject: reviews,
		})
		if err != nil {
			fail(fmt.Errorf("cannot make the feed's consumer: %v", err))
		}
	}
	feed, err := js.PullSubscribe(reviews, durable, nats.Bind(eventsStream, durable))
	if err != nil {
		fail(err)
	}

	conn, err := grpc.Dial(setting("CANDOR_GATEWAY", ""), grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	call := func(method string, request *dynamicpb.Message, reply *dynamicpb.Message) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+setting("CANDOR_TOKEN", ""))
		if err := conn.Invoke(ctx, service+method, request, reply); err != nil {
			fail(fmt.Errorf("%s failed: %v", method, err))
		}
	}

	search := spec.message("candor.gateway.v1.SearchRequest")
	fill(search, map[string]interface{}{
		"caseNumber":             caseNumber,
		"purpose":                "investigation",
		"authorisationReference": os.Getenv("CANDOR_AUTHORISATION"), // empty where the policy allows
		"clientRequestId":        requestID(),
	})
	search.Set(search.Descriptor().Fields().ByName("probe_image"), protoreflect.ValueOfBytes(probe))
	found := spec.message("candor.gateway.v1.SearchResponse")
	call("Search", search, found)
	searchID := found.Get(found.Descriptor().Fields().ByName("search_id")).String()
	candidates := found.Get(found.Descriptor().Fields().ByName("candidates")).List().Len()
	say("searched", map[string]interface{}{"search_id": searchID, "candidates": candidates})
	if candidates == 0 {
		say("done", map[string]interface{}{"lead": false})
		return
	}

	// Wait for this search's outcome; other searches' events are someone else's news.
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	var outcome map[string]interface{}
	for outcome == nil && time.Now().Before(deadline) {
		messages, err := feed.Fetch(16, nats.MaxWait(2*time.Second))
		if err != nil && err != nats.ErrTimeout {
			fail(err)
		}
		for _, message := range messages {
			event := spec.message("candor.events.v1.LifecycleEvent")
			if err := proto.Unmarshal(message.Data, event); err != nil {
				fail(err)
			}
			_ = message.Ack()
			fields := asMap(event)
			if fields["search_id"] == searchID && fields["kind"] != "review.disputed" {
				outcome = fields
			}
		}
	}
	if outcome == nil {
		fail(fmt.Errorf("no outcome of search %s on %s within %d s", searchID, eventsStream, wait))
	}
	step := "rejected"
	if outcome["kind"] == "review.confirmed" {
		step = "lead"
	}
	say(step, outcome)

	export := spec.message("candor.gateway.v1.ExportCaseResponse")
	request := spec.message("candor.gateway.v1.ExportCaseRequest")
	fill(request, map[string]interface{}{"caseNumber": caseNumber})
	call("ExportCase", request, export)
	fields := asMap(export)
	kinds := []interface{}{}
	records, _ := fields["records"].([]interface{})
	for _, record := range records {
		kinds = append(kinds, record.(map[string]interface{})["event"].(map[string]interface{})["kind"])
	}
	verification, _ := fields["verification"].(map[string]interface{})
	say("exported", map[string]interface{}{
		"case_number": fields["case_number"], "records": len(records), "kinds": kinds,
		"chain_ok": verification["ok"] == true, "exported_by": fields["exported_by"],
	})
}
