-- Claimed deliveries by deadline: lets a claim tell in one index probe whether any lapsed claim
-- has run out of attempts and must be dead-lettered, without scanning the inbox's backlog.
CREATE INDEX deliveries_claimed ON deliveries (inbox, visible_at) WHERE state = 'claimed';
