-- The language the consent notice was shown in ('zh-CN' or 'en'); NULL for
-- consents given before languages were recorded, or by clients that do not
-- say.
ALTER TABLE consents ADD COLUMN language TEXT;
ALTER TABLE consent_history ADD COLUMN language TEXT;
