//! Numbers in schemaless records keep their value when the records cross processes: a `Json`
//! or `serde_json::Value` partition encoded with the bag's codec and decoded again holds the
//! same `f64`s as the text it was parsed from (what a cluster does to every partition it
//! moves), for random doubles written in their shortest round-trip form.

use kiln_bag::Json;
use kiln_graph::{CodecRegistry, Value};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Random finite doubles over the whole exponent range, and some with few digits.
fn doubles(n: usize) -> Vec<f64> {
    let mut state = 17;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let x = f64::from_bits(splitmix(&mut state));
        if x.is_finite() {
            out.push(x);
            out.push((splitmix(&mut state) % 1_000_000) as f64 / 1000.0);
        }
    }
    out
}

fn through_the_codec<T: Send + Sync + 'static + Clone>(items: Vec<T>) -> Vec<T> {
    kiln_bag::portable::ensure_registered();
    let registry = CodecRegistry::global();
    let encoded = registry.encode(&Value::new(items)).unwrap();
    registry.decode(&encoded).unwrap().take::<Vec<T>>().unwrap()
}

#[test]
fn json_records_keep_their_doubles_through_the_codec() {
    let xs = doubles(20_000);
    let records: Vec<Json> =
        xs.iter().map(|x| Json::parse(&format!("{{\"x\": {x:e}, \"list\": [{x:?}]}}")).unwrap()).collect();
    let back = through_the_codec(records);
    let mut shifted = 0;
    for (x, record) in xs.iter().zip(&back) {
        let got = record["x"].as_f64().unwrap();
        let in_list = record["list"][0].as_f64().unwrap();
        if got.to_bits() != x.to_bits() || in_list.to_bits() != x.to_bits() {
            shifted += 1;
            if shifted < 5 {
                eprintln!("{x:e} came back as {got:e} / {in_list:e} ({record})");
            }
        }
    }
    assert_eq!(shifted, 0, "{shifted} of {} doubles changed", xs.len());
}

#[test]
fn values_keep_their_doubles_through_the_codec() {
    let xs = doubles(20_000);
    let values: Vec<serde_json::Value> =
        xs.iter().map(|x| serde_json::from_str(&format!("{{\"x\": {x:e}}}")).unwrap()).collect();
    let parsed_right =
        values.iter().zip(&xs).filter(|(v, x)| v["x"].as_f64().unwrap().to_bits() == x.to_bits()).count();
    let back = through_the_codec(values);
    let mut shifted = 0;
    for (x, value) in xs.iter().zip(&back) {
        if value["x"].as_f64().unwrap().to_bits() != x.to_bits() {
            shifted += 1;
        }
    }
    assert_eq!(parsed_right, xs.len(), "serde_json parsed {} of {} doubles exactly", parsed_right, xs.len());
    assert_eq!(shifted, 0, "{shifted} of {} doubles changed", xs.len());
}
