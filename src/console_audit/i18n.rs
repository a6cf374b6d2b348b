//! Every string of the auditor console, once per language.

/// The languages the console speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    ZhCn,
    En,
}

impl Lang {
    /// The BCP 47 tag, for `lang=` and the switch.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::ZhCn => &ZH_CN,
            Lang::En => &EN,
        }
    }

    /// `?lang=` wins (the switch), then the best `Accept-Language` match,
    /// then Chinese, the language of the field's platforms.
    pub fn pick(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = query.and_then(Self::of_tag) {
            return lang;
        }
        let mut best: Option<(f32, Lang)> = None;
        for item in accept_language.unwrap_or("").split(',').take(32) {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(|t| Self::of_tag(t.trim())) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::ZhCn, |(_, lang)| lang)
    }

    fn of_tag(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

/// The strings of one language.
pub struct Text {
    pub title: &'static str,
    pub lead: &'static str,
    pub switch_label: &'static str,
    pub other_language: &'static str,
    pub verified: &'static str,
    pub failed: &'static str,
    pub not_checked: &'static str,
    pub latest_checkpoint: &'static str,
    pub no_checkpoint: &'static str,
    pub checked_against: &'static str,
    pub key: &'static str,
    pub checkpoint: &'static str,
    pub signature_check: &'static str,
    pub whole_log: &'static str,
    pub whole_log_check: &'static str,
    pub whole_log_ok: &'static str,
    pub whole_log_fresh: &'static str,
    pub failing_entry: &'static str,
    pub size_over_time: &'static str,
    pub chart_label: &'static str,
    pub history: &'static str,
    pub history_note: &'static str,
    pub size: &'static str,
    pub signed_on: &'static str,
    pub root: &'static str,
    pub signature: &'static str,
    pub consistency: &'static str,
    pub first_checkpoint: &'static str,
    pub totals: &'static str,
    pub totals_note: &'static str,
    pub tenant: &'static str,
    pub kind: &'static str,
    pub month: &'static str,
    pub events: &'static str,
    pub reduction_g: &'static str,
    pub points: &'static str,
    pub suppressed: &'static str,
    pub suppressed_cells: &'static str,
    pub no_totals: &'static str,
    pub lookup: &'static str,
    pub entry_number: &'static str,
    pub show: &'static str,
    pub entry_title: &'static str,
    pub back: &'static str,
    pub decoded: &'static str,
    pub emptied: &'static str,
    pub checks: &'static str,
    pub leaf_check: &'static str,
    pub decode_check: &'static str,
    pub inclusion_check: &'static str,
    pub not_covered: &'static str,
    pub path: &'static str,
    pub download: &'static str,
    pub download_note: &'static str,
    pub where_checked: &'static str,
}

pub static ZH_CN: Text = Text {
    title: "审计控制台：碳账本审计日志",
    lead: "任何人无需登录即可查看：日志的签名检查点、规模变化、检查点之间的一致性，以及与日志对账的减排汇总。页面只显示假名化数据。",
    switch_label: "语言",
    other_language: "English",
    verified: "已验证",
    failed: "验证失败",
    not_checked: "未检查",
    latest_checkpoint: "最新签名检查点（C2SP 格式）",
    no_checkpoint: "尚无签名检查点。",
    checked_against: "本结果依赖于：",
    key: "验证公钥",
    checkpoint: "检查点（条目数，树根）",
    signature_check: "检查点签名与公布的公钥相符",
    whole_log: "整条日志重新计算",
    whole_log_check: "检查内容：每条记录的叶哈希、哈希链以及每个已签名检查点的树根。",
    whole_log_ok: "条记录、已对照的检查点数：",
    whole_log_fresh: "结果最多缓存 2 秒。",
    failing_entry: "第一条未通过的记录",
    size_over_time: "日志规模变化",
    chart_label: "各检查点的日志条目数",
    history: "检查点历史",
    history_note: "每个检查点都验证签名，并用一致性证明（RFC 9162）验证它延续了前一个检查点。",
    size: "条目数",
    signed_on: "签署日期",
    root: "树根",
    signature: "签名",
    consistency: "与前一个的一致性",
    first_checkpoint: "（最早显示的检查点）",
    totals: "对账后的减排汇总",
    totals_note: "与 /v1/reports/reductions 相同的公开报告：人数少于阈值的单元格不单独显示，只计入该平台的“已隐藏”合计，总数仍可对账。最少人数：",
    tenant: "平台",
    kind: "行为",
    month: "月份",
    events: "事件数",
    reduction_g: "减排量（克 CO2e）",
    points: "积分",
    suppressed: "已隐藏的小单元格合计",
    suppressed_cells: "单元格数",
    no_totals: "尚无记录。",
    lookup: "按序号查看记录",
    entry_number: "记录序号",
    show: "查看",
    entry_title: "审计记录",
    back: "返回审计控制台",
    decoded: "解码后的记录（仅假名化字段）",
    emptied: "该记录已按保留期限清空，只保留其哈希。",
    checks: "检查",
    leaf_check: "记录字节的哈希与存储的叶哈希一致",
    decode_check: "记录按规范格式解码，且序号正确",
    inclusion_check: "包含证明：该记录是检查点所签名的树中的一片叶子",
    not_covered: "该记录尚未被签名检查点覆盖。",
    path: "包含路径",
    download: "下载证明文件",
    download_note: "离线验证：carbon-ledger audit verify-proof 文件 --key 公钥",
    where_checked: "检查在服务器上进行。",
};

pub static EN: Text = Text {
    title: "Auditor console: the carbon ledger's audit log",
    lead: "Open to anyone, no login: the log's signed checkpoints, its size over time, consistency between checkpoints, and reduction totals reconciled with the log. Only pseudonymous data is shown.",
    switch_label: "Language",
    other_language: "中文",
    verified: "Verified",
    failed: "FAILED",
    not_checked: "Not checked",
    latest_checkpoint: "Latest signed checkpoint (C2SP)",
    no_checkpoint: "No signed checkpoint yet.",
    checked_against: "This result depends on:",
    key: "Verifier key",
    checkpoint: "Checkpoint (entries, root)",
    signature_check: "The checkpoint's signature matches the published key",
    whole_log: "The whole log recomputed",
    whole_log_check: "Checked: every entry's leaf hash, the hash chain, and the tree root at every signed checkpoint.",
    whole_log_ok: "entries; checkpoints checked against: ",
    whole_log_fresh: "The result is cached for at most 2 seconds.",
    failing_entry: "First entry that fails",
    size_over_time: "Log size over time",
    chart_label: "Entries in the log at each checkpoint",
    history: "Checkpoint history",
    history_note: "Each checkpoint's signature is checked, and a consistency proof (RFC 9162) shows it extends the one before.",
    size: "Entries",
    signed_on: "Signed on",
    root: "Root",
    signature: "Signature",
    consistency: "Consistent with the previous",
    first_checkpoint: "(oldest shown)",
    totals: "Reconciled reduction totals",
    totals_note: "The public report of /v1/reports/reductions: cells with fewer people than the threshold are not shown alone but summed in their platform's suppressed line, so totals still reconcile. Minimum people per cell: ",
    tenant: "Platform",
    kind: "Behaviour",
    month: "Month",
    events: "Events",
    reduction_g: "Reduction (g CO2e)",
    points: "Points",
    suppressed: "Small cells, suppressed and summed",
    suppressed_cells: "Cells",
    no_totals: "Nothing recorded yet.",
    lookup: "Look up an entry by index",
    entry_number: "Entry number",
    show: "Show",
    entry_title: "Audit entry",
    back: "Back to the auditor console",
    decoded: "The decoded entry (pseudonymous fields only)",
    emptied: "Retention emptied this entry; only its hash remains.",
    checks: "Checks",
    leaf_check: "The entry's bytes hash to the stored leaf hash",
    decode_check: "The entry decodes canonically and names its own index",
    inclusion_check: "Inclusion proof: the entry is a leaf of the tree the checkpoint signs",
    not_covered: "No signed checkpoint covers this entry yet.",
    path: "Inclusion path",
    download: "Download the proof file",
    download_note: "Check it offline: carbon-ledger audit verify-proof FILE --key VKEY",
    where_checked: "The checks run on the server.",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_wins_then_accept_language_by_quality() {
        assert_eq!(Lang::pick(Some("en"), Some("zh-CN")), Lang::En);
        assert_eq!(Lang::pick(None, Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::pick(None, Some("fr, en;q=0.5, zh;q=0.8")), Lang::ZhCn);
        assert_eq!(Lang::pick(None, Some("de")), Lang::ZhCn);
        assert_eq!(Lang::pick(Some("xx"), None), Lang::ZhCn);
        assert_eq!(Lang::pick(None, Some("zh;q=0, en;q=0.1")), Lang::En);
    }
}
