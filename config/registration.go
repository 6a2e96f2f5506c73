package config

import (
	"regexp"

	"maunium.net/go/mautrix/appservice"
)

// Registration builds the appservice registration for the homeserver. The
// user namespace exclusively claims the bot user (^@<username>:<domain>$) and
// its ghost users (^@<username>_.*:<domain>$). Rate limiting is disabled.
func (c *Config) Registration() *appservice.Registration {
	rateLimited := false
	user := regexp.QuoteMeta(c.Appservice.Bot.Username)
	domain := regexp.QuoteMeta(c.Homeserver.Domain)
	return &appservice.Registration{
		ID:              c.Appservice.ID,
		URL:             c.Appservice.Address,
		AppToken:        c.Appservice.ASToken,
		ServerToken:     c.Appservice.HSToken,
		SenderLocalpart: c.Appservice.Bot.Username,
		RateLimited:     &rateLimited,
		Namespaces: appservice.Namespaces{
			UserIDs: appservice.NamespaceList{
				{Regex: "^@" + user + ":" + domain + "$", Exclusive: true},
				{Regex: "^@" + user + "_.*:" + domain + "$", Exclusive: true},
			},
		},
	}
}
