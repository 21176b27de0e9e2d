package localfed

import (
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
)

// portPicker picks free loopback ports and holds them until release, so
// that no two picks of one federation get the same port (a port closed
// at once may be handed out again by the next bind).
//
// Ports come from below Linux's ephemeral range (32768–60999 by default),
// where binds to port 0 — every other test and client on the machine —
// never land: between release and the node's own bind (a moment in one
// process, longer when `demo --init-only` writes configurations that other
// processes start later, or when a demo resumes), nobody else takes them by
// accident. If that range is crowded, port 0 is the fallback.
type portPicker struct {
	held []io.Closer
	rng  *rand.Rand
}

const (
	pickLow, pickHigh = 20000, 32768
	pickTries         = 64
)

func newPortPicker() *portPicker {
	return &portPicker{rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))}
}

// pick returns a free UDP port (exchange) and two free TCP ports (API,
// metrics) on 127.0.0.1.
func (p *portPicker) pick() ([3]string, error) {
	var out [3]string
	for i := range out {
		c, addr, err := p.bind(i == 0)
		if err != nil {
			return out, err
		}
		p.held = append(p.held, c)
		out[i] = addr
	}
	return out, nil
}

// bind holds a free port, UDP or TCP.
func (p *portPicker) bind(udp bool) (io.Closer, string, error) {
	try := func(port int) (io.Closer, string, error) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return nil, "", err
			}
			return pc, pc.LocalAddr().String(), nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", err
		}
		return ln, ln.Addr().String(), nil
	}
	for range pickTries {
		if c, addr, err := try(pickLow + p.rng.IntN(pickHigh-pickLow)); err == nil {
			return c, addr, nil
		}
	}
	return try(0)
}

// release frees the ports for the nodes to bind.
func (p *portPicker) release() {
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
}

// PickPorts returns a free UDP port (exchange) and two free TCP ports (API,
// metrics) on 127.0.0.1, as host:port, for a node added to a local
// federation later (credfed region add).
func PickPorts() ([3]string, error) {
	p := newPortPicker()
	defer p.release()
	return p.pick()
}
