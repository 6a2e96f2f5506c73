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
		// To-device events (room keys) and device list changes for the bot's device pushed in transactions
		// (MSC2409, MSC3202), where the homeserver supports it (Synapse with its experimental features on);
		// homeservers without it (Dendrite) ignore these keys, and the device syncs for them itself.
		EphemeralEvents:     true,
		SoruEphemeralEvents: true,
		MSC3202:             true,
		Namespaces: appservice.Namespaces{
			UserIDs: appservice.NamespaceList{
				{Regex: "^@" + user + ":" + domain + "$", Exclusive: true},
				{Regex: "^@" + user + "_.*:" + domain + "$", Exclusive: true},
			},
		},
	}
}
