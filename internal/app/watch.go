package app

import (
	"log/slog"

	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/watch"
)

// changeFeed is the store's change feed, which the watch hub follows; nil
// for a store without one (the hub then serves cluster health only).
func changeFeed(st store.Store, log *slog.Logger) watch.Feed {
	switch s := st.(type) {
	case *memory.Store:
		return s.ChangeFeed()
	case *postgres.Store:
		return s.ChangeFeed(postgres.FeedOptions{Log: log})
	}
	return nil
}
