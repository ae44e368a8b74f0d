package pace

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep after cancel: %v", err)
	}
}

func TestWaitClosed(t *testing.T) {
	ch := make(chan struct{})
	if err := WaitClosed(context.Background(), ch, time.Millisecond); err == nil {
		t.Error("no error for an open channel")
	}
	close(ch)
	if err := WaitClosed(context.Background(), ch, time.Hour); err != nil {
		t.Errorf("closed channel: %v", err)
	}
}
