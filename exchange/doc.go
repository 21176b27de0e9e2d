// Package exchange is the peer protocol of the federation: how nodes talk
// to each other, and the only way they do.
//
// # Shape
//
// Each node has one Endpoint: one UDP port, one quic.Transport, which both
// listens and dials. It carries two protocols, told apart by ALPN:
//
//   - credfed/1 (ALPN): request/response. One long-lived QUIC connection
//     per peer address, dialed lazily and shared by all callers (a second
//     caller waits for the running dial instead of dialing again), redialed
//     after loss with a capped exponential backoff on failures. One
//     bidirectional stream per request: the caller opens it, writes one
//     frame, closes its send side and reads one frame back. Concurrent
//     requests never wait for each other beyond the peer's stream limit.
//   - credfed-raft/1 (RaftALPN): byte streams for hashicorp/raft. Each raft
//     net.Conn is one QUIC stream, and all raft conns to one address share
//     one QUIC connection (separate from the request connection). Opening
//     a raft conn costs a stream, not a handshake (BenchmarkRaftDial), and
//     raft's NetworkTransport, which dials a fresh conn for every pipeline
//     and snapshot and whenever its pool is empty, gets them for free.
//     Deadlines map onto the stream's; Close unblocks pending Reads and
//     Writes and still delivers written data (FIN), then the peer reads
//     io.EOF.
//
// # Trust
//
// Both sides present node certificates (certs): the server requires and
// verifies the client's chain against the federation CA, federation,
// validity, revocation and suspension during the handshake, and refuses
// user-role certificates; the client does the same for the server and, if
// the Peer names an Identity, checks that the peer is that one. Handlers
// see the verified identity in Request.Caller (CallerFrom for deeper
// layers), never anything the peer asserts. TLS 1.3 finishes client
// authentication after the client believes the handshake done
// (quic-go#5643), so a refused client learns it on its first request: Call
// maps the CRYPTO_ERROR to ErrUnauthenticated. A change of the revocation
// list re-checks every live connection (both directions) and closes those
// whose certificate is now revoked or suspended; every connection is also
// closed when the peer certificate (or its chain) expires. 0-RTT is off
// (replayable); TLS session resumption is on for redials (the resumed
// certificate is re-checked against revocation and expiry).
//
// A valid certificate proves who a peer is, not that it belongs to the
// federation. Config.Admit is asked about every request's caller, before
// any other check, and Config.AdmitRaft about every raft connection and
// stream (and again every RaftReadmitInterval): the node answers both from
// the region registry (registered, with the certificate's role; for raft,
// as a voter). A refused request is answered with the hook's error
// (forbidden unless it says otherwise) on the caller's first use of the
// connection; a refused raft peer loses its connection (code 0x6).
// Operations registered with Unregistered (joining) skip Admit.
//
// # Wire
//
// A frame is a 4-byte big-endian length then that many bytes of one CBOR
// map (integer keys): the request envelope {1 version, 2 op, 3 id, 4
// timeout_ms, 5 meta, 6 body} or the response {1 version, 3 id, 6 body, 7
// error {1 code, 2 message}}. The body is a byte string holding one
// encoded CBOR item, decoded by the handler (Request.Decode) with strict
// limits. A fixed 4-byte length was chosen over a varint because a peer
// in any language reads it with one call and the limit is checked before a
// byte of the body is read. The deadline travels as the remaining time in
// milliseconds, not as a wall-clock time: district clocks may drift by
// seconds (certificates tolerate 5 minutes), and a relative timeout is
// immune to that; the server counts it from the stream's arrival, so its
// deadline may trail the caller's by the one-way delay. docs/exchange.md
// has the format byte by byte.
//
// # Errors
//
// Errors on the wire are a code and a message (Code, Error). errors.Is
// with the sentinels (ErrForbidden, ...) works on what a handler returns
// and on what Call returns. A handler's plain Go error is answered
// internal with a generic message: its text might carry personal data, so
// only its type is logged. Connection failures map to codes as well:
// refused certificates to unauthenticated, an unreachable or closing peer
// to unavailable, a passed deadline to deadline_exceeded.
//
// # Limits
//
// Nothing a peer sends is held without a bound (Limits): frames (4 MiB),
// streams per connection (512, QUIC MAX_STREAMS; credit returns when a
// stream is finished), connections per identity (8) and in all (4096),
// request bytes held per identity (32 MiB) and in all (256 MiB), running
// handlers per identity (256), time to receive a request (10 s), handler
// time (the caller's deadline, at most 2 min). A request over a cap waits
// at most QueueWait (100 ms) and is then answered unavailable (or
// too_many_requests for a per-identity, per-operation RateLimit); there is
// no unbounded queue. QUIC: handshake idle timeout 5 s; idle timeout 30 s
// with keep-alives every 10 s, so connections survive between sparse
// lookups and a dead peer is noticed within 30 s; receive windows of one
// frame per stream and 16 MiB per connection; no unidirectional streams.
// A stateless reset key derived from the node's private key lets a
// restarted node tell peers at once that their old connections are gone;
// a call that finds its connection dead before the request was processed
// (closed, or reset by a restarted peer) is sent once more on a new one.
//
// # Observability
//
// Metrics (metrics.go) go to the Registerer of the Config, with bounded
// labels: operation, peer role, code, direction, reason. Logs name peers
// by identity (institutions and regions, no persons) and never carry
// bodies or Meta values.
package exchange
