package main

import (
	"context"
	"sync"
)

// gate holds the callers of pass while it is shut.
type gate struct {
	mu       sync.Mutex
	shutCh   chan struct{} // closed to open; nil while open
	heldOnce func()        // tells the shutter a caller is held
}

// shut makes the next callers of pass wait until open; the channel
// returned is closed once one of them waits.
func (g *gate) shut() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shutCh = make(chan struct{})
	waiting := make(chan struct{})
	g.heldOnce = sync.OnceFunc(func() { close(waiting) })
	return waiting
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutCh != nil {
		close(g.shutCh)
		g.shutCh = nil
	}
}

func (g *gate) pass(ctx context.Context) error {
	g.mu.Lock()
	ch, held := g.shutCh, g.heldOnce
	g.mu.Unlock()
	if ch == nil {
		return nil
	}
	held()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
