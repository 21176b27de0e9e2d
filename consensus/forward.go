package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/certs"
	"credfed/exchange"
)

// Exchange operations served by every replica (answered by the leader;
// a follower answers unavailable so the caller looks for the leader again).
const (
	opApply     = "consensus.apply"     // an operator command, relayed
	opIndex     = "consensus.index"     // a district's index updates
	opReadIndex = "consensus.readindex" // the leader's confirmed commit index
	opPresence  = "consensus.presence"  // a node's announced stop or start (presence.go)
)

// MaxForwardUpdates bounds the index updates of one forwarded request.
const MaxForwardUpdates = 4096

// Bounds of consensus.apply, the relay of operator commands. Only
// coordinator nodes relay them (operatorRelay), and operators issue few:
// a caller may send applyRate a second on average, in bursts of
// applyBurst, and a body of at most MaxApplyBody bytes (the default
// catalog, the largest body, is about 40 KB).
const (
	MaxApplyBody = 1 << 20
	applyRate    = 20
	applyBurst   = 100
)

type applyRequest struct {
	Type  CommandType     `cbor:"1,keyasint"`
	Actor certs.Identity  `cbor:"2,keyasint"`
	Body  cbor.RawMessage `cbor:"3,keyasint"`
}

// applyReply and indexReply say how a forwarded command ended: applied
// (empty), refused by the FSM, not taken because the node is not the
// leader (certainly not applied: ask the leader), or with an unknown
// outcome (the leader lost its leadership after proposing: the command
// may still be applied).
type applyReply struct {
	Refused   *wireRefusal `cbor:"1,keyasint,omitempty"`
	Unknown   bool         `cbor:"2,keyasint,omitempty"`
	NotLeader bool         `cbor:"3,keyasint,omitempty"`
}

type indexRequest struct {
	Updates []IndexUpdate `cbor:"1,keyasint"`
}

type indexReply struct {
	Refused   *wireRefusal `cbor:"1,keyasint,omitempty"`
	Unknown   bool         `cbor:"2,keyasint,omitempty"`
	NotLeader bool         `cbor:"3,keyasint,omitempty"`
}

type readIndexReply struct {
	Index     uint64 `cbor:"1,keyasint"`
	NotLeader bool   `cbor:"2,keyasint,omitempty"`
}

// notTaken reports whether err says that a command was certainly not
// proposed (no leader here, or closing before proposing it).
func notTaken(err error) bool {
	return (errors.Is(err, ErrNoLeader) || errors.Is(err, ErrClosed)) && !errors.Is(err, ErrOutcomeUnknown)
}

// wireRefusal carries a *RefusedError back to the proposer.
type wireRefusal struct {
	Reason  string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint"`
}

var refusalReasons = map[string]error{
	"forbidden": ErrForbidden, "invalid": ErrInvalid, "conflict": ErrConflict, "not_found": ErrNotFound, "expired": ErrExpired,
}

func toWire(err error) *wireRefusal {
	var re *RefusedError
	if !errors.As(err, &re) {
		return nil
	}
	for name, reason := range refusalReasons {
		if re.Reason == reason {
			return &wireRefusal{Reason: name, Message: re.Message}
		}
	}
	return nil
}

// leaderOutcome is how a command handed to the leader ended, from its
// reply: nil when applied, a *RefusedError, ErrOutcomeUnknown, or
// ErrNoLeader when the node asked was not the leader any more.
func leaderOutcome(refused *wireRefusal, unknown, notLeader bool) error {
	switch {
	case refused != nil:
		return refused.err()
	case unknown:
		return ErrOutcomeUnknown
	case notLeader:
		return fmt.Errorf("%w: the node asked is not the leader any more", ErrNoLeader)
	}
	return nil
}

func (w *wireRefusal) err() error {
	reason, ok := refusalReasons[w.Reason]
	if !ok {
		reason = ErrInvalid
	}
	return &RefusedError{Reason: reason, Message: w.Message}
}

func (r *Replica) registerHandlers() {
	ep := r.cfg.Endpoint
	// Relayed commands enter every node's log: only the nodes that may
	// relay them call, with bounded bodies at a bounded rate, and the
	// leader checks each against its state before proposing it
	// (handleApply).
	ep.Handle(opApply, r.handleApply, exchange.AllowRoles(certs.Province, certs.City),
		exchange.MaxBody(MaxApplyBody), exchange.RateLimit(applyRate, applyBurst))
	ep.Handle(opIndex, r.handleIndex, exchange.AllowRoles(certs.District))
	r.registerAnchorHandler() // consensus.anchor, from any node (anchor.go)
	r.registerKeyHandler()    // consensus.keyprogress, from any node (keys.go)
	ep.Handle(opReadIndex, r.handleReadIndex)
	// Asked by a new node only, before its registry arrives (newcomer.go).
	ep.Handle(opVoters, r.handleVoters, exchange.Timeout(time.Second), exchange.MaxBody(64), exchange.RateLimit(1, 5))
	// A caller can only announce itself; the rate limit keeps a chatty or
	// hostile one from filling the logs with its announcements.
	ep.Handle(opPresence, r.handlePresence, exchange.Timeout(time.Second), exchange.RateLimit(1, 8))
}

func (r *Replica) handleApply(ctx context.Context, req *exchange.Request) (any, error) {
	if !r.IsLeader() {
		return applyReply{NotLeader: true}, nil
	}
	var in applyRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	// The command table says which commands a node may relay.
	if spec := commandFor(in.Type); spec == nil || !spec.relay {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "command %s cannot be relayed", in.Type)
	}
	// A body that is not well-formed CBOR would make the whole log entry
	// undecodable on every replica: refuse it here.
	if err := decMode.Wellformed(in.Body); err != nil {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "command body is not well-formed CBOR")
	}
	data, err := EncodeCommand(in.Type, Envelope{Proposer: req.Caller, Actor: in.Actor, At: nowUTC()}, in.Body)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "command does not encode")
	}
	// A command the FSM would refuse is refused here, before it is in the
	// log of every node: checked as the FSM will see it, decoded from the
	// entry.
	cmd, err := DecodeCommand(data)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "command does not decode")
	}
	if err := r.precheck(ctx, cmd); err != nil {
		if w := toWire(err); w != nil {
			return applyReply{Refused: w}, nil
		}
		if notTaken(err) {
			return applyReply{NotLeader: true}, nil
		}
		return nil, toExchange(err)
	}
	f := r.raft.Apply(data, timeoutOf(ctx, 10*time.Second))
	if err := r.await(f); err != nil {
		err = raftError(err)
		switch {
		case errors.Is(err, ErrOutcomeUnknown):
			return applyReply{Unknown: true}, nil
		case notTaken(err):
			return applyReply{NotLeader: true}, nil
		}
		return nil, toExchange(err)
	}
	if e, ok := f.Response().(error); ok && e != nil {
		return applyReply{Refused: toWire(e)}, nil
	}
	return applyReply{}, nil
}

func (r *Replica) handleIndex(ctx context.Context, req *exchange.Request) (any, error) {
	if !r.IsLeader() {
		return indexReply{NotLeader: true}, nil
	}
	var in indexRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Updates) == 0 || len(in.Updates) > MaxForwardUpdates {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "a forward holds 1 to %d updates, not %d", MaxForwardUpdates, len(in.Updates))
	}
	err := r.batcher.submit(ctx, req.Caller, in.Updates)
	if w := toWire(err); w != nil {
		return indexReply{Refused: w}, nil
	}
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return indexReply{Unknown: true}, nil
	case notTaken(err):
		return indexReply{NotLeader: true}, nil
	}
	if err != nil {
		return nil, toExchange(err)
	}
	return indexReply{}, nil
}

func (r *Replica) handleReadIndex(ctx context.Context, req *exchange.Request) (any, error) {
	if !r.IsLeader() {
		return readIndexReply{NotLeader: true}, nil
	}
	index, err := r.leaderReadIndex(ctx)
	if notTaken(err) {
		return readIndexReply{NotLeader: true}, nil
	}
	if err != nil {
		return nil, toExchange(err)
	}
	return readIndexReply{Index: index}, nil
}

// toExchange turns a local consensus error into a wire error.
func toExchange(err error) error {
	switch {
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrClosed):
		return exchange.Errorf(exchange.CodeUnavailable, "no leader")
	case errors.Is(err, ErrStale), errors.Is(err, context.DeadlineExceeded):
		return exchange.Errorf(exchange.CodeDeadlineExceeded, "deadline passed")
	}
	return exchange.Errorf(exchange.CodeInternal, "internal error")
}

// fromWire turns an exchange error from the leader into a consensus error.
func fromWire(err error) error {
	var e *exchange.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code {
	case exchange.CodeUnavailable:
		// Unreachable, overloaded, or the connection lost while waiting
		// for the answer: whether the leader took the request is unknown.
		return fmt.Errorf("%w: %s", ErrOutcomeUnknown, e.Message)
	case exchange.CodeDeadlineExceeded, exchange.CodeCanceled:
		return fmt.Errorf("consensus: leader: %w: %s", context.DeadlineExceeded, e.Message)
	case exchange.CodeForbidden, exchange.CodeUnauthenticated:
		return &RefusedError{Reason: ErrForbidden, Message: e.Message}
	case exchange.CodeBadRequest:
		return &RefusedError{Reason: ErrInvalid, Message: e.Message}
	}
	return err
}

func nowUTC() time.Time { return time.Now().UTC() }
