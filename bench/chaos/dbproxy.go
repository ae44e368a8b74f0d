package main

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/oaas/pm/bench/internal/pace"
)

// dbProxy relays PMs' database connections so that a fault can take the
// database away from them, as a restart or a network cut would, without
// touching the server itself (which may be a system service other work
// depends on). It listens on loopback only.
type dbProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startDBProxy relays to the database of dsn and returns the proxy and dsn
// rewritten to go through it.
func startDBProxy(ctx context.Context, dsn string) (*dbProxy, string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, "", err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	p := &dbProxy{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	u.Host = ln.Addr().String()
	return p, u.String(), nil
}

func (p *dbProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close() // refused while the database is "away"
			continue
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		up, err := d.DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *dbProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// outage drops every open connection and refuses new ones for d.
func (p *dbProxy) outage(ctx context.Context, d time.Duration) {
	p.mu.Lock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = pace.Sleep(ctx, d)
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// close stops the proxy and every relayed connection.
func (p *dbProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
