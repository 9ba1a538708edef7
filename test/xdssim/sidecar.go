package xdssim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"

	xdsv1alpha1 "gatehouse.dev/gatehouse/api/xds/v1alpha1"
	"gatehouse.dev/gatehouse/operator/xds"
)

// Sidecar is one simulated sidecar. Its methods are safe to call while it
// runs.
type Sidecar struct {
	index  int
	target Target
	report func(string)

	bytes atomic.Int64

	mu        sync.Mutex
	held      map[string]map[string]resource // by type URL, then name
	answered  map[string]bool                // types answered at least once
	lastApply time.Time
	removals  map[string]int
	waiters   []*waiter
	drop      func() // ends the current stream and its connection
}

// resource is what a sidecar keeps of one resource: the version as the
// 32 bytes it encodes, and the decoded message.
type resource struct {
	sum [sha256.Size]byte
	msg proto.Message
}

// waiter is one WaitAll's interest in an API key entry of one sidecar.
type waiter struct {
	name string
	cond func(*xdsv1alpha1.APIKeyEntry) bool
	at   time.Time
	done chan struct{}
}

// namedMessage is what the three Gatehouse resource types have in common.
type namedMessage interface {
	proto.Message
	GetName() string
}

func newSidecar(index int, target Target, report func(string)) *Sidecar {
	s := &Sidecar{
		index: index, target: target, report: report,
		held: map[string]map[string]resource{}, answered: map[string]bool{}, removals: map[string]int{},
	}
	for _, t := range xds.Types {
		s.held[t] = map[string]resource{}
	}
	return s
}

// Index is the sidecar's position in its fleet.
func (s *Sidecar) Index() int { return s.index }

// Namespace is the namespace the sidecar's target names.
func (s *Sidecar) Namespace() string { return s.target.Namespace }

// Complete says every type has been answered at least once: the point
// from which a real sidecar serves its state.
func (s *Sidecar) Complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.answered) == len(xds.Types)
}

// Count is the number of resources of typeURL held.
func (s *Sidecar) Count(typeURL string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held[typeURL])
}

// Entry is the API key entry name as held, or nil. The caller must not
// change it.
func (s *Sidecar) Entry(name string) *xdsv1alpha1.APIKeyEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, _ := s.held[xds.APIKeyEntryType][name].msg.(*xdsv1alpha1.APIKeyEntry)
	return e
}

// BytesReceived is the sum of proto.Size of every response received.
func (s *Sidecar) BytesReceived() int64 { return s.bytes.Load() }

// Removals is how many times an ACTIVE API key entry name the sidecar held
// was removed, or replaced by one that is not ACTIVE.
func (s *Sidecar) Removals(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removals[name]
}

// lastApplied is when the sidecar last applied a response.
func (s *Sidecar) lastApplied() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastApply
}

// versions are the versions held of typeURL, for initial_resource_versions.
func (s *Sidecar) versions(typeURL string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.held[typeURL]))
	for name, r := range s.held[typeURL] {
		out[name] = hex.EncodeToString(r.sum[:])
	}
	return out
}

// apply checks and applies one response, and returns the number of
// resources refused (each reported as a violation).
func (s *Sidecar) apply(r *discovery.DeltaDiscoveryResponse) (refused int) {
	s.bytes.Add(int64(proto.Size(r)))
	typ := r.GetTypeUrl()
	decoded := make(map[string]resource, len(r.GetResources()))
	for _, res := range r.GetResources() {
		rec, problem := s.check(typ, res)
		if problem != "" {
			s.violation(typ, res.GetName(), problem)
			refused++
			continue
		}
		decoded[res.GetName()] = rec
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[typ]; !ok {
		return refused
	}
	s.answered[typ] = true
	for _, name := range r.GetRemovedResources() {
		s.remove(typ, name)
	}
	for _, res := range r.GetResources() {
		if rec, ok := decoded[res.GetName()]; ok {
			s.put(typ, res.GetName(), rec)
		} else {
			s.remove(typ, res.GetName()) // fail closed, as the real sidecar
		}
	}
	s.lastApply = time.Now()
	if typ == xds.APIKeyEntryType {
		s.notify(r)
	}
	return refused
}

// check decodes one resource of a response of type typ and says what is
// wrong with it, if anything.
func (s *Sidecar) check(typ string, res *discovery.Resource) (resource, string) {
	if !slices.Contains(xds.Types, typ) {
		return resource{}, "the response's type is not a Gatehouse type"
	}
	a := res.GetResource()
	if a.GetTypeUrl() != typ {
		return resource{}, fmt.Sprintf("the resource's type is %q, not the response's", a.GetTypeUrl())
	}
	sum := sha256.Sum256(a.GetValue())
	if res.GetVersion() != hex.EncodeToString(sum[:]) {
		return resource{}, "its version is not the SHA-256 of its content"
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typ)
	if err != nil {
		return resource{}, "its type is not registered"
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return resource{}, "its value does not decode"
	}
	if nm, ok := msg.(namedMessage); !ok || nm.GetName() != res.GetName() {
		return resource{}, "the message carries another name"
	}
	if s.target.Belongs != nil && !s.target.Belongs(typ, res.GetName(), msg) {
		return resource{}, "it is not of the sidecar's namespace"
	}
	return resource{sum: sum, msg: msg}, ""
}

func (s *Sidecar) violation(typ, name, problem string) {
	s.report(fmt.Sprintf("sidecar %d (namespace %s): %s %q: %s", s.index, s.target.Namespace, shortType(typ), name, problem))
}

func shortType(typ string) string {
	for i := len(typ) - 1; i >= 0; i-- {
		if typ[i] == '.' || typ[i] == '/' {
			return typ[i+1:]
		}
	}
	return typ
}

// put and remove run under mu.
func (s *Sidecar) put(typ, name string, r resource) {
	if typ == xds.APIKeyEntryType && active(s.held[typ][name].msg) && !active(r.msg) {
		s.removals[name]++
	}
	s.held[typ][name] = r
}

func (s *Sidecar) remove(typ, name string) {
	old, ok := s.held[typ][name]
	if !ok {
		return
	}
	if typ == xds.APIKeyEntryType && active(old.msg) {
		s.removals[name]++
	}
	delete(s.held[typ], name)
}

func active(m proto.Message) bool {
	e, ok := m.(*xdsv1alpha1.APIKeyEntry)
	return ok && e.GetState() == xdsv1alpha1.APIKeyState_API_KEY_STATE_ACTIVE
}

// watch registers w and settles it at once when its condition holds.
func (s *Sidecar) watch(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settle(w, time.Now()) {
		return
	}
	s.waiters = append(s.waiters, w)
}

// unwatch forgets w.
func (s *Sidecar) unwatch(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiters = slices.DeleteFunc(s.waiters, func(x *waiter) bool { return x == w })
}

// notify settles the waiters whose entries r touched; under mu.
func (s *Sidecar) notify(r *discovery.DeltaDiscoveryResponse) {
	if len(s.waiters) == 0 {
		return
	}
	touched := map[string]bool{}
	for _, name := range r.GetRemovedResources() {
		touched[name] = true
	}
	for _, res := range r.GetResources() {
		touched[res.GetName()] = true
	}
	s.waiters = slices.DeleteFunc(s.waiters, func(w *waiter) bool {
		return touched[w.name] && s.settle(w, s.lastApply)
	})
}

// settle closes w with the time at when its condition holds; under mu.
func (s *Sidecar) settle(w *waiter, at time.Time) bool {
	e, _ := s.held[xds.APIKeyEntryType][w.name].msg.(*xdsv1alpha1.APIKeyEntry)
	if !w.cond(e) {
		return false
	}
	w.at = at
	close(w.done)
	return true
}
