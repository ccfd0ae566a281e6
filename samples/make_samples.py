"""Generate batchrun's sample input files, deterministically.

    python samples/make_samples.py           # rewrite the files (byte-identical on every run)
    python samples/make_samples.py --check   # exit 1 if a file on disk differs from a fresh build

Outputs, next to this script:

- requests.jsonl   OpenAI Batch API lines: {"custom_id", "method", "url", "body"}
- requests.parquet the same rows: custom_id, url, method, body (the body as a JSON string)
- prompts.jsonl    bare chat completion bodies, one a line
- families.jsonl   one or two rows of every endpoint family beyond chat (speech, transcriptions,
                   images, Claude, Gemini, ...), with the files they upload in files/
- README.md        what the files hold, with the counts of this build

Only the standard library and pyarrow. Every random choice comes from `random.Random(seed)`.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20241124
PROMPTS_SEED = 7
N_PROMPTS = 50

# Kind -> number of rows in requests.jsonl (300 in all), interleaved by a seeded shuffle.
KIND_COUNTS: dict[str, int] = {
    "chat": 165,
    "tools": 45,
    "reasoning": 30,
    "vision": 30,
    "embeddings": 30,
}

CHAT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo"]
CHAT_MODEL_WEIGHTS = [50, 20, 20, 10]
TOOL_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
VISION_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"]
REASONING_MODELS = ["o1-mini", "o3-mini", "o4-mini"]

JSONDict = dict[str, Any]
Rng = random.Random


def dumps(obj: object) -> str:
    """The one JSON spelling used in every file: UTF-8 text, not \\u escapes."""
    return json.dumps(obj, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Tiny valid PNGs for inline data: URLs
# --------------------------------------------------------------------------------------------

Pixel = tuple[int, int, int]


def png_bytes(pixels: list[list[Pixel]]) -> bytes:
    """An 8-bit RGB PNG, no filter, built with zlib and struct only."""
    height, width = len(pixels), len(pixels[0])

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def data_url(pixels: list[list[Pixel]]) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


RED, GREEN, BLUE, WHITE, BLACK = (220, 30, 40), (30, 170, 60), (40, 80, 220), (255,) * 3, (0,) * 3
TINY_IMAGES: list[tuple[str, list[list[Pixel]]]] = [
    ("a 2x2 checkerboard thumbnail", [[RED, WHITE], [WHITE, RED]]),
    ("a 2x2 colour swatch", [[RED, GREEN], [BLUE, WHITE]]),
    ("a 3x2 icon", [[BLACK, BLUE, BLACK], [BLUE, BLUE, BLUE]]),
    (
        "a 4x4 gradient tile",
        [[(r * 64, g * 64, 128) for g in range(4)] for r in range(4)],
    ),
]

# --------------------------------------------------------------------------------------------
# Text pools
# --------------------------------------------------------------------------------------------

NEWS_SNIPPETS = [
    "The city council voted 7-2 on Tuesday to convert three downtown parking garages into mixed-"
    "use housing, with at least 30 percent of the 1,200 planned units reserved for households "
    "earning below the area median income. Opponents argued the loss of 2,400 parking spaces would "
    "hurt retailers; supporters pointed to a survey showing the garages ran at 41 percent "
    "occupancy on weekdays. Construction is expected to begin in spring 2026.",
    "Quarterly revenue rose 12% year over year to $4.3 billion, driven by a 31% jump in cloud "
    "subscriptions, while hardware sales fell 8% amid weaker consumer demand in Europe. The "
    "company raised its full-year operating margin guidance to 24-25% and announced a $2 billion "
    "share buyback. Shares gained 6% in after-hours trading.",
    "Researchers at the university's marine lab reported that a heatwave in the North Atlantic "
    "last summer pushed surface temperatures 4°C above the 30-year average for eleven consecutive "
    "weeks. Kelp forests along a 200 km stretch of coastline lost an estimated 60% of their "
    "canopy, and local fishers saw lobster landings drop by a third.",
    "The regional rail operator will replace its paper season tickets with a contactless card "
    "from 1 March. Existing tickets remain valid until they expire, and passengers over 65 can "
    "request the new card at any staffed station. The operator says the change will cut queueing "
    "times at peak hours and save about €3.5 million a year in printing and handling.",
    "A software update pushed to 180,000 smart thermostats on Saturday caused many of them to "
    "reboot every few minutes, leaving homes without heating during the coldest weekend of the "
    "year. The manufacturer rolled the update back within nine hours and said affected customers "
    "would receive a one-month credit on their subscription.",
    "联合研究团队发布报告称，过去十年间全国城市公共自行车的日均使用量增长了近三倍，其中通勤出行占比"
    "超过六成。报告建议在地铁站周边增设停车点，并将共享单车数据纳入城市交通规划。",
    "Le conseil régional a approuvé un budget de 48 millions d'euros pour la rénovation "
    "énergétique des lycées. Les travaux, qui débuteront à l'été, prévoient l'isolation des "
    "façades, le remplacement des chaudières au fioul et l'installation de panneaux solaires sur "
    "une vingtaine d'établissements.",
    "Die Stadtwerke erhöhen zum 1. Januar die Grundgebühr für Fernwärme um 9 Prozent. Als Grund "
    "nennt das Unternehmen gestiegene Netzkosten und Investitionen in eine Großwärmepumpe am "
    "Flussufer, die ab 2027 rund ein Viertel des Wärmebedarfs decken soll.",
]

TRANSLATION_SENTENCES = [
    "Your order has shipped and should arrive within 3-5 business days.",
    "We're sorry, but the item you selected is temporarily out of stock.",
    "Please restart the device and hold the reset button for ten seconds.",
    "The meeting has been moved to Thursday at 2 pm in conference room B.",
    "Thanks for your patience while our team investigates the issue.",
    "Click the link below to verify your email address. The link expires in 24 hours.",
    "Side effects may include drowsiness; do not operate heavy machinery after taking this "
    "medication.",
    "Our refund policy allows returns within 30 days of delivery, provided the item is unused "
    "and in its original packaging.",
    "Il est possible que le colis arrive avec un léger retard en raison des grèves.",
    "Könnten Sie mir bitte die Rechnung noch einmal als PDF schicken?",
    "¿Dónde puedo encontrar el número de seguimiento de mi pedido?",
    "您好，我想修改一下收货地址，订单还没有发货。",
    "この商品はギフト包装に対応していますか？",
    "Obrigado pela compra! Avalie o produto e ganhe 10% de desconto na próxima.",
]
TARGET_LANGUAGES = [
    "French",
    "German",
    "Spanish",
    "Simplified Chinese",
    "Japanese",
    "Brazilian Portuguese",
    "Italian",
    "English",
]

REVIEWS = [
    "Absolutely love this blender 😍 crushes ice in seconds and it's surprisingly quiet.",
    "Arrived two weeks late and the box was crushed. The product itself works fine I guess.",
    "Worst customer service ever. Three emails, zero replies. 👎👎",
    "It does what it says. Nothing more, nothing less.",
    "Battery lasts all day even with GPS on. Best purchase this year!!! 🔋🔥",
    "The strap broke after 3 days. Returned it.",
    "Très bon rapport qualité-prix, je recommande sans hésiter.",
    "Das Material fühlt sich billig an und riecht stark nach Plastik.",
    "质量很好，物流也很快，下次还会再来买！👍",
    "配送が遅くて、箱もへこんでいました。",
    "Muy cómodo pero la talla es más pequeña de lo normal, pide una más.",
    "Meh. The colour in the photos is way brighter than in real life.",
    "Setup took 5 minutes, app is intuitive, and support answered my question at 11pm on a "
    "Sunday. Impressed.",
    "I wanted to like it, but after the firmware update it disconnects every hour 😤",
    "Okay for the price. Wouldn't buy it again, wouldn't tell anyone to avoid it either.",
    "Ótimo produto, chegou antes do prazo e bem embalado.",
]

EXTRACTION_DOCS = [
    (
        "invoice",
        "INVOICE #INV-2024-08817\nDate: 14 Oct 2024\nBill to: Nordlicht GmbH, Hafenstraße 12, "
        "20457 Hamburg\nItems:\n  3 x Ergonomic chair Model K2 @ €289.00\n  1 x Standing desk "
        "160x80 @ €649.00\nSubtotal: €1,516.00\nVAT 19%: €288.04\nTotal due: €1,804.04\n"
        "Payment terms: 30 days net. IBAN DE89 3704 0044 0532 0130 00",
        ["invoice_number", "date", "customer_name", "total", "currency", "due_in_days"],
    ),
    (
        "email",
        "Hi team,\n\nI'd like to book the Lisbon offsite for 14 people from 3 to 6 June. We need "
        "a meeting room for 16 with a projector, vegetarian options for 4 people, and airport "
        "transfers on arrival. Budget is around €18k all in. Could you send a quote by Friday?\n\n"
        "Thanks,\nMarta Oliveira\nHead of Operations, Quantis Labs\n+351 912 345 678",
        ["sender_name", "company", "city", "start_date", "end_date", "attendees", "budget"],
    ),
    (
        "job posting",
        "Senior Data Engineer (m/f/d) - Remote (EU) - €85,000-€105,000\nWe're looking for an "
        "engineer with 5+ years of experience in Python and SQL, hands-on work with Spark or "
        "Flink, and familiarity with Airflow. Nice to have: dbt, Kafka, Terraform. Apply by "
        "30 November.",
        ["title", "location", "salary_min", "salary_max", "required_skills", "deadline"],
    ),
    (
        "shipping notice",
        "Votre colis n° 6A19283746501 a été remis à La Poste le 22/10/2024. Livraison prévue : "
        "jeudi 24 octobre entre 9h et 13h à l'adresse 8 rue des Lilas, 69003 Lyon. "
        "Poids : 2,4 kg.",
        ["tracking_number", "carrier", "ship_date", "delivery_date", "city", "weight_kg"],
    ),
    (
        "medical appointment",
        "Reminder: Dr. Anjali Mehta (Dermatology) - Tue 19 Nov 2024, 10:40. Clinic: Riverside "
        "Health, 2nd floor, room 214. Please arrive 15 minutes early and bring your insurance "
        "card. To reschedule call 020 7946 0321.",
        ["doctor", "specialty", "date", "time", "location", "phone"],
    ),
    (
        "receipt",
        "星巴克 上海静安店\n2024-11-02 08:17\n大杯拿铁 x2  ¥76.00\n"
        "蓝莓麦芬 x1  ¥28.00\n合计 ¥104.00\n支付方式：微信支付",
        ["store", "datetime", "items", "total", "currency", "payment_method"],
    ),
    (
        "contract clause",
        "This Agreement shall commence on 1 January 2025 and continue for an initial term of "
        "twenty-four (24) months, after which it shall renew automatically for successive "
        "twelve (12) month periods unless either party gives not less than ninety (90) days' "
        "written notice of termination.",
        ["start_date", "initial_term_months", "renewal_term_months", "notice_days"],
    ),
]

SQL_SCHEMAS = [
    "customers(id, name, email, country, created_at)\n"
    "orders(id, customer_id, status, total_cents, created_at)\n"
    "order_items(order_id, product_id, quantity, unit_price_cents)\n"
    "products(id, sku, name, category)",
    "employees(id, full_name, department_id, manager_id, salary, hired_on)\n"
    "departments(id, name, location)",
    "events(user_id, event_name, occurred_at, properties jsonb)\nusers(id, signup_at, plan)",
]
SQL_QUESTIONS = [
    (0, "Top 10 customers by total spend in 2024, excluding cancelled orders."),
    (0, "Monthly revenue for the last 12 months, with month-over-month growth in percent."),
    (0, "Products that were never ordered."),
    (0, "For each country, the average number of items per order."),
    (1, "Employees who earn more than their manager."),
    (1, "The second-highest salary in each department, ties included."),
    (1, "Headcount per location hired in each year since 2020."),
    (2, "Seven-day retention by weekly signup cohort for users on the 'pro' plan."),
    (2, "The median time between 'signup_completed' and the first 'project_created' event."),
    (2, "Daily active users over the last 30 days, as a rolling 7-day average."),
]
SQL_DIALECTS = ["PostgreSQL", "MySQL 8", "SQLite", "BigQuery Standard SQL", "DuckDB"]

EMAIL_DRAFTS = [
    "hey, so the deploy is delayed again bc QA found stuff. prob next week? sorry",
    "Per my last email, the invoice is still unpaid. Please advise.",
    "can u send me the slides from yesterday, need them for the board thing tmrw",
    "We regret to inform you that your application was not successful this time.",
    "the office will be closed fri for maintenance, wfh pls, vpn might be slow",
]
EMAIL_TONES = ["polite and professional", "friendly but concise", "formal", "warm and empathetic"]

PRODUCTS = [
    ("Trailblazer 40L hiking backpack", "recycled nylon, rain cover, hip-belt pockets, 1.3 kg"),
    ("Lumen desk lamp", "adjustable colour temperature 2700-6500K, USB-C charging port, oak base"),
    ("Brew&Go travel mug", "double-walled steel, leak-proof lid, keeps drinks hot for 8 hours"),
    ("Pixel Paws cat feeder", "Wi-Fi, portion control, voice recording, 4 L hopper"),
    ("Nordic wool throw", "100% merino, 130x170 cm, made in Portugal, machine washable at 30°C"),
    ("SoundPebble earbuds", "ANC, 28 h battery with case, IPX5, multipoint Bluetooth 5.3"),
]

CODE_SNIPPETS = [
    (
        "Python",
        "def dedupe(items):\n    seen = []\n    out = []\n    for x in items:\n        if x not in "
        "seen:\n            seen.append(x)\n            out.append(x)\n    return out",
    ),
    (
        "JavaScript",
        "async function loadAll(ids) {\n  const results = [];\n  ids.forEach(async (id) => {\n"
        "    const r = await fetch(`/api/items/${id}`);\n    results.push(await r.json());\n  });\n"
        "  return results;\n}",
    ),
    (
        "SQL",
        "SELECT * FROM orders o LEFT JOIN customers c ON o.customer_id = c.id WHERE c.country = "
        "'DE' OR c.country = 'AT' AND o.status <> 'cancelled'",
    ),
    (
        "Go",
        "func worker(jobs <-chan int, wg sync.WaitGroup) {\n\tdefer wg.Done()\n\tfor j := range "
        "jobs {\n\t\tprocess(j)\n\t}\n}",
    ),
    ("Bash", "for f in $(ls *.csv); do\n  cat $f | grep -v '^#' > clean_$f\ndone"),
]

REGEXES = [
    r"^(?=.*[A-Z])(?=.*\d)[A-Za-z\d@$!%*?&]{8,}$",
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
    r"^[\w.+-]+@[\w-]+\.[\w.]+$",
    r"(?<!\d)(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?!\d)",
]

SUPPORT_MESSAGES = [
    ("customer_48213", "I was charged twice for my subscription this month. Can you fix that?"),
    ("customer_10077", "How do I export all my notes as Markdown? I'm moving to another app."),
    ("customer_55102", "Bonjour, je n'arrive plus à me connecter depuis la mise à jour d'hier."),
    ("customer_73390", "my package says delivered but it's not here 😕 what now?"),
    ("customer_20918", "Can I downgrade from Business to Pro without losing my shared folders?"),
    ("customer_66421", "你好，我的发票抬头写错了，可以重新开一张吗？"),
]

CLASSIFY_TICKETS = [
    "The app crashes whenever I open the camera tab on my Pixel 8.",
    "Please cancel my plan at the end of the billing cycle.",
    "Is there a student discount?",
    "I can't reset my password, the email never arrives.",
    "Your invoice shows VAT but we're a registered business in Ireland.",
    "Feature request: dark mode for the web dashboard please 🙏",
    "Die Synchronisierung mit Google Kalender funktioniert seit gestern nicht mehr.",
]
TICKET_LABELS = ["bug", "billing", "account", "feature_request", "sales", "other"]

BRAINSTORM_TOPICS = [
    "names for a neighbourhood bakery that specialises in sourdough",
    "taglines for a budgeting app aimed at university students",
    "team-building activities for a fully remote team of 25 across 6 time zones",
    "blog post titles about migrating a monolith to microservices",
    "names for a podcast about the history of everyday objects",
]

QUESTIONS = [
    "What's the difference between a Roth IRA and a traditional IRA? Keep it short.",
    "Explain what a vector database is to a product manager in three sentences.",
    "Why does bread go stale faster in the fridge?",
    "How do I politely decline a meeting invitation without giving a reason?",
    "What are the main trade-offs between PostgreSQL and MongoDB for an e-commerce backend?",
    "Give me a 3-day itinerary for Kyoto in November, with one rainy-day option per day.",
    "Explain the CAP theorem with a real-world analogy.",
    "量子计算和经典计算最本质的区别是什么？请用通俗的语言解释。",
    "Quelle est la différence entre « tu » et « vous » dans un e-mail professionnel ?",
    "What should I check before signing a 12-month lease on an apartment?",
]

# Long documents for the few prompts of several thousand characters.

MEETING_TRANSCRIPT = """\
[00:00] Priya (PM): Okay, let's get started. Agenda today: the checkout redesign status, the \
payment provider migration, and whether we ship the loyalty programme before Black Friday or \
after.
[00:41] Tomás (Eng lead): Checkout first. The new single-page flow is feature complete behind a \
flag. We ran it for 5% of web traffic last week. Conversion went from 3.1% to 3.4%, which looks \
good, but the sample is small and mobile Safari had a spike in client errors, about 0.8% of \
sessions, mostly a race condition in the address autocomplete.
[01:52] Priya: Is that fixed?
[01:55] Tomás: Fix is in review. Léa found it. It should land tomorrow and then I'd like another \
week at 5% before we go to 25%.
[02:20] Léa (Frontend): One more thing on checkout: the accessibility audit flagged the card \
form. Screen readers don't announce validation errors. It's a two-day fix, but it has to be done \
before a wider rollout, legally we need WCAG AA for the EU sites.
[03:05] Priya: Agreed, that's a blocker. Léa, can you own it?
[03:08] Léa: Yes.
[03:15] Priya: Payment migration. Sven?
[03:18] Sven (Payments): We've moved 60% of card volume to the new provider. Authorisation rate \
is up 1.2 points in Germany and the Nordics, flat elsewhere. Fees are down about 11 basis points \
on average. The open problem is SEPA direct debit: the new provider's mandate import failed for \
roughly 4,000 customers because of a date format mismatch, DD.MM.YYYY versus ISO.
[04:40] Tomás: Do those customers get charged on the old provider meanwhile?
[04:44] Sven: Yes, we kept dual-running for SEPA, nobody misses a payment. But we pay both \
providers' minimum fees until it's done, roughly €6,000 a month.
[05:10] Priya: What's the timeline to fix the import?
[05:13] Sven: The script fix is trivial. The slow part is the provider's re-validation, they say \
ten business days. So realistically end of the month.
[05:40] Priya: Okay. Loyalty programme. Marketing wants it live for Black Friday.
[05:48] Aisha (Marketing): We do. Last year 38% of Black Friday buyers were first-time customers \
and only 9% of them came back within 90 days. Points at signup is our best lever to fix that.
[06:30] Tomás: Engineering-wise the points ledger is done, but the redemption flow touches \
checkout, and we're changing checkout right now. Shipping both in the same three weeks worries me.
[07:02] Aisha: Could we launch earning only, and redemption in January?
[07:10] Tomás: That's much safer. Earning is just an event consumer, it doesn't touch checkout.
[07:25] Sven: Finance will want the liability accounted for from day one, even if nobody can \
redeem. I'll check with Hannah.
[07:50] Priya: Let's go with earning-only for Black Friday, redemption in January, pending \
finance. Aisha, please adjust the campaign copy so we don't promise instant redemption.
[08:10] Aisha: Fine. I'll need final copy approved by the 8th for the email sends.
[08:30] Priya: Anything else? No? Then actions: Léa the accessibility fix, Tomás the rollout \
plan to 25%, Sven the SEPA import and the finance question, Aisha the campaign copy. Thanks all.
"""

CODE_REVIEW_MODULE = """\
import json, os, time
import requests

CACHE = {}

def get_user(user_id, token=os.environ.get("API_TOKEN")):
    if user_id in CACHE:
        return CACHE[user_id]
    r = requests.get("https://api.example.com/users/" + str(user_id),
                     headers={"Authorization": "Bearer " + token})
    data = r.json()
    CACHE[user_id] = data
    return data

def get_users(ids):
    out = []
    for i in ids:
        try:
            out.append(get_user(i))
        except:
            pass
    return out

def save_report(users, path="report.json"):
    f = open(path, "w")
    json.dump([{"id": u["id"], "name": u["name"], "email": u["email"]} for u in users], f)

def retry(fn, attempts=5):
    for n in range(attempts):
        try:
            return fn()
        except Exception as e:
            print("retrying", e)
            time.sleep(2 ** n)

def active_users(users, days=30):
    now = time.time()
    res = []
    for u in users:
        last = time.mktime(time.strptime(u["last_login"], "%Y-%m-%dT%H:%M:%S"))
        if now - last < days * 86400:
            res.append(u)
    return res

def main():
    ids = [int(x) for x in open("ids.txt").read().split(",")]
    users = retry(lambda: get_users(ids))
    active = active_users(users)
    save_report(active)
    print("saved", len(active), "of", len(users))

if __name__ == "__main__":
    main()
"""

TICKET_PRODUCTS = [
    "Aurora X2 router",
    "MeshPro 3-pack",
    "SmartPlug Mini",
    "CloudSync app",
    "billing portal",
]
TICKET_CUSTOMERS = [
    "José Álvarez",
    "Zoë Müller",
    "François Lefèvre",
    "Ingrid Sørensen",
    "Łukasz Wójcik",
    "王芳",
    "Aylin Çelik",
    "Nguyễn Văn An",
    "Chloé Dubois",
    "Björn Åkesson",
    "Priya Raman",
    "Tom Baker",
]
TICKET_BODIES = [
    "{p} drops the connection every evening around 9pm; a reboot fixes it until the next day.",
    "After the latest firmware update the {p} no longer shows up in the app.",
    "I was billed twice for the {p} subscription in October. Please refund one charge.",
    "Setup of the {p} fails at step 3 with error code E-0x31.",
    "The {p} is great but the 5 GHz network is very slow in the bedroom 😕",
    "Can't log in to the {p}, the 2FA code never arrives by SMS.",
    "{p}: 每天晚上都会断线，重启后恢复正常，已经持续一周了。",
    "Le {p} se déconnecte dès que le micro-ondes est allumé. Est-ce normal ?",
    "Requesting an invoice with our company VAT number for the {p} purchase.",
    "The {p} LED blinks orange and nothing works. Tried a factory reset twice. 😡",
]
TICKET_STATUSES = ["open", "pending customer", "escalated", "resolved"]

LOG_SERVICES = ["api-gateway", "orders-svc", "payments-svc", "inventory-svc"]
LOG_NORMAL = [
    "GET /v1/orders/{n} 200 {ms}ms",
    "POST /v1/orders 201 {ms}ms",
    "GET /v1/inventory/sku-{n} 200 {ms}ms",
    "cache hit ratio 0.{n2}",
    "health check ok",
]
LOG_TROUBLE = [
    "WARN pg pool: waiting for connection ({n2} waiters, max=20)",
    "ERROR pg pool: timeout acquiring connection after 5000ms",
    "POST /v1/orders 503 {ms}ms upstream=payments-svc",
    "WARN retrying request to payments-svc (attempt {a}/3)",
    "ERROR circuit breaker OPEN for payments-svc",
]


def support_ticket_dump(rng: Rng) -> str:
    lines = []
    for k in range(28):
        product = rng.choice(TICKET_PRODUCTS)
        body = rng.choice(TICKET_BODIES).format(p=product)
        day, hour, minute = 4 + k // 4, 8 + (k * 5) % 10, (k * 17) % 60
        lines.append(
            f"#{48120 + k} | 2024-11-{day:02d} {hour:02d}:{minute:02d} | "
            f"{rng.choice(TICKET_CUSTOMERS)} | {rng.choice(TICKET_STATUSES)} | {body}"
        )
    return "\n".join(lines)


def server_log(rng: Rng) -> str:
    lines = ["2024-11-18T02:58:00Z deploy-bot INFO deployed orders-svc v2.41.0 (pool_size 20 -> 5)"]
    seconds = 3 * 3600
    for k in range(56):
        seconds += rng.randint(3, 40)
        stamp = f"2024-11-18T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
        pool = LOG_TROUBLE if k > 18 and rng.random() < 0.3 + k / 100 else LOG_NORMAL
        msg = rng.choice(pool).format(
            n=rng.randint(1000, 99999),
            n2=rng.randint(10, 99),
            ms=rng.randint(8, 400) if pool is LOG_NORMAL else rng.randint(4000, 9000),
            a=rng.randint(1, 3),
        )
        level = "" if msg.startswith(("WARN", "ERROR")) else "INFO "
        lines.append(f"{stamp} {rng.choice(LOG_SERVICES)} {level}{msg}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Chat tasks: each returns (system, user, params) where params are extra body fields
# --------------------------------------------------------------------------------------------

ChatTask = tuple[str, str, JSONDict]


def task_summarise(rng: Rng) -> ChatTask:
    text = rng.choice(NEWS_SNIPPETS)
    style = rng.choice(
        ["in one sentence", "in three bullet points", "in under 50 words", "as a headline"]
    )
    system = "You are a news editor. Summaries are factual, neutral and keep every number."
    return system, f"Summarise the following article {style}:\n\n{text}", {"max_tokens": 150}


def task_translate(rng: Rng) -> ChatTask:
    sentence = rng.choice(TRANSLATION_SENTENCES)
    target = rng.choice(TARGET_LANGUAGES)
    system = (
        "You are a professional translator for an e-commerce company. Translate faithfully, keep "
        "placeholders and numbers unchanged, and reply with the translation only."
    )
    return system, f"Translate into {target}:\n{sentence}", {"max_tokens": 120, "temperature": 0}


def task_sentiment(rng: Rng) -> ChatTask:
    review = rng.choice(REVIEWS)
    system = (
        "Classify the sentiment of the customer review. Answer with exactly one word: "
        "positive, negative, or neutral."
    )
    return system, review, {"max_tokens": 3, "temperature": 0}


def task_extract(rng: Rng) -> ChatTask:
    kind, doc, fields = rng.choice(EXTRACTION_DOCS)
    system = (
        "You extract structured data. Reply with a single JSON object with exactly the requested "
        "keys; use null for anything that is not stated."
    )
    user = f"Extract these fields from the {kind}: {', '.join(fields)}.\n\n---\n{doc}\n---"
    params: JSONDict = {"max_tokens": 300, "temperature": 0}
    if rng.random() < 0.5:
        params["response_format"] = {"type": "json_object"}
    return system, user, params


def task_sql(rng: Rng) -> ChatTask:
    schema_i, question = rng.choice(SQL_QUESTIONS)
    dialect = rng.choice(SQL_DIALECTS)
    system = f"You are a senior data analyst. Write correct, readable {dialect}. Return only SQL."
    user = f"Tables:\n{SQL_SCHEMAS[schema_i]}\n\nQuestion: {question}"
    return system, user, {"max_tokens": 400, "temperature": 0.1}


def task_rewrite_email(rng: Rng) -> ChatTask:
    draft = rng.choice(EMAIL_DRAFTS)
    tone = rng.choice(EMAIL_TONES)
    system = "You help employees write clear workplace emails."
    return system, f"Rewrite this message so it is {tone}:\n\n{draft}", {"max_tokens": 250}


def task_product_copy(rng: Rng) -> ChatTask:
    name, specs = rng.choice(PRODUCTS)
    words = rng.choice([40, 80, 120])
    system = "You write product descriptions for an online shop. No exaggerated claims."
    user = f"Write a {words}-word product description for the {name}. Key facts: {specs}."
    return system, user, {"max_tokens": words * 2, "temperature": 0.8}


def task_code_review(rng: Rng) -> ChatTask:
    lang, code = rng.choice(CODE_SNIPPETS)
    system = f"You are a meticulous {lang} code reviewer. Point out bugs first, then style."
    return system, f"Review this {lang} code:\n\n```\n{code}\n```", {"max_tokens": 500}


def task_regex(rng: Rng) -> ChatTask:
    pattern = rng.choice(REGEXES)
    system = "You explain regular expressions to junior developers, piece by piece."
    return (
        system,
        f"What does this regex match? Give two examples.\n\n{pattern}",
        {"max_tokens": 350},
    )


def task_classify_ticket(rng: Rng) -> ChatTask:
    ticket = rng.choice(CLASSIFY_TICKETS)
    system = "Route support tickets. Reply with one label from: " + ", ".join(TICKET_LABELS) + "."
    return system, ticket, {"max_tokens": 5, "temperature": 0}


def task_brainstorm(rng: Rng) -> ChatTask:
    topic = rng.choice(BRAINSTORM_TOPICS)
    system = "You are a creative copywriter."
    params: JSONDict = {"max_tokens": 200, "temperature": 1.0, "n": 2}
    return system, f"Give me 5 {topic}.", params


def task_question(rng: Rng) -> ChatTask:
    question = rng.choice(QUESTIONS)
    system = "You are a helpful assistant. Answer accurately and concisely."
    params: JSONDict = {"max_tokens": rng.choice([256, 512, 800])}
    if rng.random() < 0.3:
        params["temperature"] = 0.7
    return system, question, params


SHORT_TASKS: list[tuple[Callable[[Rng], ChatTask], int]] = [
    (task_summarise, 14),
    (task_translate, 14),
    (task_sentiment, 14),
    (task_extract, 12),
    (task_sql, 10),
    (task_rewrite_email, 6),
    (task_product_copy, 6),
    (task_code_review, 6),
    (task_regex, 3),
    (task_classify_ticket, 8),
    (task_brainstorm, 4),
    (task_question, 10),
]


def long_task(rng: Rng, which: int) -> ChatTask:
    """Prompts of a few thousand characters."""
    if which == 0:
        system = "You are a support operations analyst."
        user = (
            "Below are this week's support tickets. Group them into themes, give a count per "
            "theme, flag anything that looks like a regression from a release, and list the "
            "three actions with the largest expected impact.\n\n" + support_ticket_dump(rng)
        )
        return system, user, {"max_tokens": 900, "temperature": 0.2}
    if which == 1:
        system = "You write crisp meeting minutes: decisions, owners, deadlines, open risks."
        user = "Write the minutes for this meeting transcript.\n\n" + MEETING_TRANSCRIPT
        return system, user, {"max_tokens": 700}
    if which == 2:
        system = "You are a senior Python reviewer. Be specific and cite line contents."
        user = (
            "Review this script before it goes to production. List correctness bugs, security "
            "issues and reliability problems, most severe first, then propose a corrected "
            "version.\n\n```python\n" + CODE_REVIEW_MODULE + "```"
        )
        return system, user, {"max_tokens": 2000, "temperature": 0}
    system = "You are an SRE on call. Reason from the evidence in the logs."
    user = (
        "Orders started failing around 03:00 UTC. Here are the merged logs. What is the most "
        "likely root cause, what is the immediate mitigation, and what follow-ups would prevent "
        "a repeat?\n\n" + server_log(rng)
    )
    return system, user, {"max_tokens": 800}


FOLLOW_UPS = [
    "Make it shorter, please.",
    "Can you do the same but in a more formal register?",
    "Thanks! Now give me the answer as a Markdown table.",
    "Perfect. Could you also translate it into German?",
    "Hmm, I think the second point is wrong. Can you double-check?",
    "谢谢！可以再简洁一点吗？",
]


def build_chat(rng: Rng, index: int, long_every: int = 0, model: str | None = None) -> JSONDict:
    is_long = bool(long_every) and index % long_every == long_every // 2
    if is_long:
        system, user, params = long_task(rng, (index // long_every) % 4)
    else:
        funcs = [t for t, _ in SHORT_TASKS]
        weights = [w for _, w in SHORT_TASKS]
        system, user, params = rng.choices(funcs, weights)[0](rng)

    if model is None:
        model = rng.choices(CHAT_MODELS, CHAT_MODEL_WEIGHTS)[0]
    user_msg: JSONDict = {"role": "user", "content": user}
    roll = 1.0 if is_long else rng.random()
    if roll < 0.08:
        name, support = rng.choice(SUPPORT_MESSAGES)
        system = (
            "You are Nova, the support assistant of a note-taking app. Be friendly, answer in "
            "the customer's language, and never invent account details."
        )
        user_msg = {"role": "user", "name": name, "content": support}
        params = {"max_tokens": 300, "temperature": 0.3}
    messages: list[JSONDict] = [{"role": "system", "content": system}, user_msg]
    if 0.08 <= roll < 0.13:
        # A short multi-turn history: the user follows up on the assistant's first answer.
        messages += [
            {"role": "assistant", "content": "Sure — here is a first version. Anything to change?"},
            {"role": "user", "content": rng.choice(FOLLOW_UPS)},
        ]

    body: JSONDict = {"model": model, "messages": messages}
    if "max_tokens" in params and rng.random() < 0.12:
        del params["max_tokens"]  # a few rows leave the output length to the server
    if "temperature" not in params and rng.random() < 0.2:
        params["temperature"] = rng.choice([0.2, 0.5, 0.7, 1.0])
    if "n" not in params and rng.random() < 0.04:
        params["n"] = 2
    body.update(params)
    return body


# --------------------------------------------------------------------------------------------
# Function calling
# --------------------------------------------------------------------------------------------


def _tool(name: str, description: str, properties: JSONDict, required: list[str]) -> JSONDict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS: dict[str, JSONDict] = {
    "get_weather": _tool(
        "get_weather",
        "Get the current weather in a given location",
        {
            "location": {"type": "string", "description": "The city and state, e.g. Boston, MA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["location"],
    ),
    "search_products": _tool(
        "search_products",
        "Search the product catalogue and return matching items with prices and stock",
        {
            "query": {"type": "string", "description": "Free-text search query"},
            "category": {
                "type": "string",
                "enum": ["electronics", "home", "outdoor", "fashion", "toys"],
            },
            "max_price": {"type": "number", "description": "Upper price limit in EUR"},
            "in_stock_only": {"type": "boolean", "default": True},
        },
        ["query"],
    ),
    "create_calendar_event": _tool(
        "create_calendar_event",
        "Create an event in the user's calendar",
        {
            "title": {"type": "string"},
            "start": {"type": "string", "description": "ISO 8601 start date-time"},
            "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480},
            "attendees": {
                "type": "array",
                "items": {"type": "string", "description": "Email address"},
            },
            "location": {"type": "string"},
        },
        ["title", "start"],
    ),
    "get_stock_price": _tool(
        "get_stock_price",
        "Get the latest trading price for a stock ticker",
        {
            "ticker": {"type": "string", "description": "Ticker symbol, e.g. AAPL"},
            "exchange": {"type": "string", "description": "Exchange code, e.g. NASDAQ, XETRA"},
        },
        ["ticker"],
    ),
    "lookup_order": _tool(
        "lookup_order",
        "Look up the status, items and shipping details of a customer order",
        {"order_id": {"type": "string", "pattern": "^[A-Z]{2}-\\d{6}$"}},
        ["order_id"],
    ),
    "convert_currency": _tool(
        "convert_currency",
        "Convert an amount between two currencies at today's rate",
        {
            "amount": {"type": "number"},
            "from_currency": {"type": "string", "description": "ISO 4217 code"},
            "to_currency": {"type": "string", "description": "ISO 4217 code"},
        },
        ["amount", "from_currency", "to_currency"],
    ),
    "send_email": _tool(
        "send_email",
        "Send an email on behalf of the user",
        {
            "to": {"type": "string"},
            "subject": {"type": "string"},
            "body": {"type": "string"},
            "cc": {"type": "array", "items": {"type": "string"}},
        },
        ["to", "subject", "body"],
    ),
}

TOOL_QUERIES: list[tuple[str, str, JSONDict]] = [
    ("get_weather", "What's the weather like in Boston today?", {"location": "Boston, MA"}),
    ("get_weather", "Do I need an umbrella in München tomorrow morning?", {"location": "Munich"}),
    ("get_weather", "东京现在多少度？用摄氏度。", {"location": "Tokyo", "unit": "celsius"}),
    ("get_weather", "Is it warm enough for a picnic in Lisbon this afternoon? ☀️", {}),
    ("search_products", "Find me noise-cancelling headphones under 150 euros", {}),
    ("search_products", "Show waterproof hiking boots, size 43, in stock", {}),
    ("search_products", "Cherche une lampe de bureau LED avec port USB-C", {}),
    ("search_products", "Any Lego sets for a 7-year-old under €40?", {}),
    ("create_calendar_event", "Schedule a 30 min sync with ana@example.com on Friday at 10", {}),
    (
        "create_calendar_event",
        "Book the quarterly review for 2 hours on 12 December at 14:00 in Room Fjord, invite "
        "lars@example.com and mei@example.com",
        {},
    ),
    ("create_calendar_event", "Put 'dentist' in my calendar next Tuesday 8:30", {}),
    ("get_stock_price", "How is NVDA trading right now?", {"ticker": "NVDA"}),
    ("get_stock_price", "Wie steht die SAP-Aktie an der XETRA?", {"ticker": "SAP"}),
    ("lookup_order", "Where is my order DE-482913? It was supposed to arrive yesterday.", {}),
    ("lookup_order", "我的订单 CN-100238 到哪里了？", {}),
    ("convert_currency", "How much is 250 USD in Japanese yen today?", {}),
    ("convert_currency", "Convert 1 200 CHF to EUR", {}),
    ("send_email", "Email tom@example.com that I'm running 10 minutes late to our 3pm", {}),
]
TOOL_SYSTEMS = [
    "You are a helpful assistant.",
    "You are a shopping assistant for an online store. Use the tools to answer; never guess "
    "prices or stock.",
    "You are an executive assistant. Today is 2024-11-20 and the user's time zone is "
    "Europe/Berlin.",
    "You are a travel concierge. Ask for missing details instead of assuming them.",
]
TOOL_RESULTS: dict[str, str] = {
    "get_weather": '{"location": "%s", "temperature": 7, "unit": "celsius", '
    '"conditions": "light rain", "humidity": 0.86}',
    "get_stock_price": '{"ticker": "%s", "price": 141.32, "currency": "USD", "change_pct": -1.8}',
}


def build_tools(rng: Rng, index: int) -> JSONDict:
    main, query, known_args = rng.choice(TOOL_QUERIES)
    others = [n for n in TOOLS if n != main]
    names = [main, *rng.sample(others, rng.choice([0, 1, 1, 2]))]
    rng.shuffle(names)
    messages: list[JSONDict] = []
    if rng.random() < 0.7:
        messages.append({"role": "system", "content": rng.choice(TOOL_SYSTEMS)})
    messages.append({"role": "user", "content": query})
    if main in TOOL_RESULTS and known_args and rng.random() < 0.6:
        # Second leg of a round trip: the model asked for the tool, here is its result.
        call_id = f"call_{index:04d}{rng.randrange(16**8):08x}"
        arg = str(next(iter(known_args.values())))
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": main, "arguments": json.dumps(known_args)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULTS[main] % arg},
        ]
    body: JSONDict = {
        "model": rng.choice(TOOL_MODELS),
        "messages": messages,
        "tools": [TOOLS[n] for n in names],
    }
    roll = rng.random()
    if roll < 0.45:
        body["tool_choice"] = "auto"
    elif roll < 0.52:
        body["tool_choice"] = {"type": "function", "function": {"name": main}}
    elif roll < 0.56:
        body["tool_choice"] = "required"
    if rng.random() < 0.8:
        body["max_tokens"] = rng.choice([256, 512, 1024])
    if rng.random() < 0.3:
        body["temperature"] = 0
    return body


# --------------------------------------------------------------------------------------------
# Reasoning models
# --------------------------------------------------------------------------------------------

REASONING_PROMPTS = [
    "A bat and a ball cost $1.10 in total. The bat costs $1.00 more than the ball. How much does "
    "the ball cost? Show your reasoning briefly.",
    "Prove that the square root of 2 is irrational.",
    "Design an algorithm that finds the k most frequent words in a 200 GB log file on a machine "
    "with 16 GB of RAM. Give its time and memory complexity.",
    "Three friends split a restaurant bill of €187.40. Anna had wine (€24), Ben skipped dessert "
    "(the two desserts cost €9 each), and the rest was shared equally. Who owes what?",
    "Write a Python function that returns the longest palindromic substring of a string in "
    "O(n) time (Manacher's algorithm), with comments.",
    "Is the following argument valid? 'All engineers like coffee. Some people who like coffee "
    "are night owls. Therefore some engineers are night owls.' Explain.",
    "We have 8 balls, one slightly heavier. Using a balance scale only twice, how do you find it?",
    "A SaaS company has 12,000 customers, 2.1% monthly churn, and adds 400 new customers a month. "
    "What customer count does it converge to, and after how many months is it within 5% of that?",
    "Find all integer solutions of x^2 - y^2 = 2024.",
    "在一个 8×8 的棋盘上，去掉对角的两个格子后，"
    "能否用 31 块 1×2 的多米诺骨牌完全覆盖？请给出证明。",
    "Our p99 latency doubled after we moved from one 32-core machine to four 8-core machines "
    "behind a round-robin load balancer, while the p50 improved. Give the three most likely "
    "explanations and how to tell them apart.",
    "Schedule these 6 exams into the fewest time slots so that no student has two at once: "
    "students take {A,B}, {B,C}, {C,D}, {D,E}, {E,F}, {F,A}, {A,D}. Justify optimality.",
    "Explain why this Rust code does not compile and fix it:\n\nfn longest(a: &str, b: &str) -> "
    "&str { if a.len() > b.len() { a } else { b } }",
    "Un train part de Paris à 8h15 à 240 km/h, un autre part de Lyon (460 km) à 8h45 à 200 km/h "
    "vers Paris. À quelle heure et à quelle distance de Paris se croisent-ils ?",
]


def build_reasoning(rng: Rng, index: int) -> JSONDict:
    model = rng.choice(REASONING_MODELS)
    if index % 12 == 6:
        content = (
            "Find every bug in this script, explain each one, and give a fixed version.\n\n"
            "```python\n" + CODE_REVIEW_MODULE + "```"
        )
    else:
        content = rng.choice(REASONING_PROMPTS)
    body: JSONDict = {"model": model, "messages": [{"role": "user", "content": content}]}
    body["max_completion_tokens"] = rng.choice([2000, 4000, 8000, 16000, 25000])
    if model != "o1-mini" and rng.random() < 0.6:
        body["reasoning_effort"] = rng.choice(["low", "medium", "high"])
    return body


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

IMAGE_TASKS: list[tuple[str, str]] = [
    ("receipts/receipt-0142.jpg", "What is the total on this receipt, and which shop issued it?"),
    ("charts/q3-revenue-by-region.jpg", "Describe the trend in this chart in two sentences."),
    ("products/sofa-grey-3seat.jpg", "Write alt text for this product photo (max 125 chars)."),
    ("claims/car-damage-rear.jpg", "List the visible damage on this car for an insurance claim."),
    ("plants/leaf-spots.jpg", "Which plant disease could cause these spots? How do I treat it?"),
    (
        "screenshots/checkout-error.jpg",
        "What error is shown in this screenshot and what causes it?",
    ),
    ("whiteboard/sprint-planning.jpg", "Transcribe the text on this whiteboard as a task list."),
    ("documents/id-card-sample.jpg", "Is this document an ID card, passport or driving licence?"),
    ("menus/bistro-menu.jpg", "Translate this menu into English and mark vegetarian dishes."),
    ("shelves/aisle-7.jpg", "How many empty slots are on the middle shelf?"),
    ("handwriting/note-0311.jpg", "请识别这张手写便条上的文字。"),
    ("street/paris-signage.jpg", "Que dit ce panneau ? Est-ce que je peux me garer ici ?"),
    ("memes/cat-keyboard.jpg", "Explain why this image is funny 😂"),
]


def build_vision(rng: Rng, index: int) -> JSONDict:
    system_needed = rng.random() < 0.3
    if index % 8 == 3:
        desc, pixels = TINY_IMAGES[(index // 8) % len(TINY_IMAGES)]
        text = f"This is {desc}. Which colours does it contain?"
        parts: list[JSONDict] = [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_url(pixels), "detail": "low"}},
        ]
    else:
        path, text = rng.choice(IMAGE_TASKS)
        parts = [{"type": "text", "text": text}]
        detail = rng.choice(["low", "high", "auto"])
        url = f"https://example.com/images/{path}"
        parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        if rng.random() < 0.15:
            other = path.replace(".jpg", "-2.jpg")
            parts[0] = {"type": "text", "text": text + " Compare the two images."}
            parts.append(
                {
                    "type": "image_url",
                    "image_url": {"url": f"https://example.com/images/{other}", "detail": detail},
                }
            )
    messages: list[JSONDict] = []
    if system_needed:
        messages.append(
            {"role": "system", "content": "You are a careful visual assistant. Say so if unsure."}
        )
    messages.append({"role": "user", "content": parts})
    body: JSONDict = {"model": rng.choice(VISION_MODELS), "messages": messages}
    if rng.random() < 0.9:
        body["max_tokens"] = rng.choice([100, 300, 500, 1000])
    return body


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------

EMBEDDING_TEXTS = [
    "How do I reset my password?",
    "Wireless noise-cancelling over-ear headphones, 30 h battery, black",
    "Refunds are issued to the original payment method within 5-7 business days.",
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes liveness probe keeps failing after upgrading to 1.29",
    "Chaise de bureau ergonomique avec soutien lombaire réglable",
    "如何申请增值税专用发票？",
    "Wie lange dauert der Versand nach Österreich?",
    "Vegan chocolate chip cookies 🍪 without refined sugar",
    "Q3 board memo: hiring freeze lifted for engineering and support roles",
    "Error: ECONNRESET while connecting to Redis cluster in eu-west-1",
    "Best hiking trails near Zürich with a lake view",
    "返品・交換のポリシーについて教えてください。",
    "Ministry announces new cybersecurity requirements for critical infrastructure operators",
]
EMBEDDING_CHUNK = (
    "Section 4.2 - Data retention. Customer content is retained for the duration of the "
    "subscription and deleted within 30 days of account closure, except where retention is "
    "required by law. Backups are encrypted at rest with AES-256 and rotated every 35 days. "
    "Access logs are kept for 13 months to support security investigations. Customers can "
    "request an export of their data at any time from the admin console; exports are delivered "
    "as a ZIP archive of JSON files within 48 hours."
)


def build_embeddings(rng: Rng, index: int) -> JSONDict:
    roll = rng.random()
    inp: str | list[str]
    if index % 10 == 4:
        inp = EMBEDDING_CHUNK
    elif roll < 0.55:
        inp = rng.choice(EMBEDDING_TEXTS)
    else:
        inp = rng.sample(EMBEDDING_TEXTS, rng.randint(2, 8))
    if rng.random() < 0.15:
        return {"model": "text-embedding-3-large", "input": inp, "dimensions": 1024}
    body: JSONDict = {"model": "text-embedding-3-small", "input": inp}
    if rng.random() < 0.2:
        body["encoding_format"] = "float"
    return body


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------

KIND_URL = {
    "chat": "/v1/chat/completions",
    "tools": "/v1/chat/completions",
    "reasoning": "/v1/chat/completions",
    "vision": "/v1/chat/completions",
    "embeddings": "/v1/embeddings",
}


def build_requests() -> list[tuple[str, JSONDict]]:
    """(kind, batch line) for every row of requests.jsonl, in file order."""
    rng = random.Random(SEED)
    kinds = [kind for kind, count in KIND_COUNTS.items() for _ in range(count)]
    rng.shuffle(kinds)
    seen: Counter[str] = Counter()
    rows: list[tuple[str, JSONDict]] = []
    for n, kind in enumerate(kinds, start=1):
        i = seen[kind]
        seen[kind] += 1
        if kind == "chat":
            body = build_chat(rng, i, long_every=28)
        elif kind == "tools":
            body = build_tools(rng, i)
        elif kind == "reasoning":
            body = build_reasoning(rng, i)
        elif kind == "vision":
            body = build_vision(rng, i)
        else:
            body = build_embeddings(rng, i)
        line = {"custom_id": f"req-{n:04d}", "method": "POST", "url": KIND_URL[kind], "body": body}
        rows.append((kind, line))
    return rows


def build_prompts() -> list[JSONDict]:
    rng = random.Random(PROMPTS_SEED)
    bodies = []
    for i in range(N_PROMPTS):
        model = "gpt-4.1-mini" if i % 5 == 4 else "gpt-4o-mini"
        bodies.append(build_chat(rng, i, long_every=25, model=model))
    return bodies


def jsonl_bytes(objs: list[JSONDict]) -> bytes:
    return "".join(dumps(o) + "\n" for o in objs).encode("utf-8")


def parquet_bytes(lines: list[JSONDict]) -> bytes:
    table = pa.table(
        {
            "custom_id": pa.array([x["custom_id"] for x in lines], pa.string()),
            "url": pa.array([x["url"] for x in lines], pa.string()),
            "method": pa.array([x["method"] for x in lines], pa.string()),
            "body": pa.array([dumps(x["body"]) for x in lines], pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return bytes(sink.getvalue().to_pybytes())


def describe(kinds: Counter[str], lines: list[JSONDict], prompts: list[JSONDict]) -> JSONDict:
    """Counts of the features the README promises, computed from the rows themselves."""
    bodies = [x["body"] for x in lines]
    chats = [b for b in bodies if "messages" in b]

    def user_parts(b: JSONDict) -> list[JSONDict]:
        return [
            p for m in b["messages"] if isinstance(m.get("content"), list) for p in m["content"]
        ]

    return {
        "kinds": dict(kinds),
        "models": dict(Counter(b["model"] for b in bodies).most_common()),
        "max_tokens": sum("max_tokens" in b for b in chats),
        "max_completion_tokens": sum("max_completion_tokens" in b for b in chats),
        "reasoning_effort": sum("reasoning_effort" in b for b in chats),
        "temperature": sum("temperature" in b for b in chats),
        "n2": sum(b.get("n") == 2 for b in chats),
        "named": sum(any("name" in m for m in b["messages"]) for b in chats),
        "tool_choice": sum("tool_choice" in b for b in chats),
        "tool_results": sum(any(m["role"] == "tool" for m in b["messages"]) for b in chats),
        "data_urls": sum(
            p.get("image_url", {}).get("url", "").startswith("data:")
            for b in chats
            for p in user_parts(b)
        ),
        "list_inputs": sum(isinstance(b.get("input"), list) for b in bodies),
        "long": sum(len(dumps(b)) > 2500 for b in bodies),
        "non_ascii": sum(not dumps(b).isascii() for b in bodies),
        "prompts_long": sum(len(dumps(b)) > 2500 for b in prompts),
    }


def readme_text(stats: JSONDict, sizes: dict[str, int]) -> str:
    k = stats["kinds"]
    total = sum(k.values())
    models = ", ".join(f"{m} {c}" for m, c in stats["models"].items())
    size_lines = "\n".join(f"| `{name}` | {size:,} bytes |" for name, size in sizes.items())
    return f"""\
# Sample inputs

Generated by `make_samples.py` (standard library + pyarrow, fixed seeds): do not edit the data files
or this README by hand, change the script and run it again.

```
.venv/bin/python samples/make_samples.py          # rewrite every file, byte-identical each run
.venv/bin/python samples/make_samples.py --check  # exit 1 if a file differs from a fresh build
```

| file | size |
| --- | --- |
{size_lines}

## `requests.jsonl` and `requests.parquet`

{total} requests in the OpenAI Batch API line format,
`{{"custom_id": "req-0001", "method": "POST", "url": "/v1/chat/completions", "body": {{...}}}}`,
custom_ids `req-0001` to `req-{total:04d}`, kinds interleaved:

| kind | rows | what the body holds |
| --- | --- | --- |
| chat | {k["chat"]} | system + user message: summarising, translating, sentiment, field \
extraction, SQL, email rewrites, code review, ticket routing, brainstorming (`"n": 2`), questions |
| tools | {k["tools"]} | `tools` with JSON-schema functions (get_weather, search_products, \
create_calendar_event, ...); `tool_choice` "auto", "required" or a named function on some; some \
carry an assistant `tool_calls` turn and its `tool` result |
| reasoning | {k["reasoning"]} | o1-mini / o3-mini / o4-mini, user message only, \
`max_completion_tokens`, `reasoning_effort` on some |
| vision | {k["vision"]} | user content as `[{{"type": "text"}}, {{"type": "image_url"}}]` with \
https URLs and `detail` low/high/auto; {stats["data_urls"]} inline `data:image/png;base64` PNGs |
| embeddings | {k["embeddings"]} | url `/v1/embeddings`, `input` a string or a list of strings \
({stats["list_inputs"]} lists), text-embedding-3-small (a few -large with `dimensions`) |

Across the chat-completion bodies: `max_tokens` on {stats["max_tokens"]}, \
`max_completion_tokens` on {stats["max_completion_tokens"]}, `temperature` on \
{stats["temperature"]}, `"n": 2` on {stats["n2"]}, a message with `name` in {stats["named"]}, \
`tool_choice` on {stats["tool_choice"]}, `reasoning_effort` on {stats["reasoning_effort"]}.
{stats["long"]} bodies are longer than 2,500 characters (support-ticket dumps, a meeting
transcript, a script to review, server logs); {stats["non_ascii"]} contain non-ASCII text
(Chinese, Japanese, accented European languages, emoji), written as UTF-8, not `\\u` escapes.

Models: {models}.

`requests.parquet` holds the same rows in the same order, columns `custom_id`, `url`, `method`
and `body` (all strings; `body` is the JSON text of the body).

## `prompts.jsonl`

{N_PROMPTS} bare chat completion bodies, one a line (`{{"model": ..., "messages": [...], \
"max_tokens": ...}}`, no custom_id or url), for the bare-body input mode: gpt-4o-mini, every fifth
gpt-4.1-mini; {stats["prompts_long"]} of them are long prompts.

## `families.jsonl` and `files/`

One or two rows of every endpoint family beyond chat, as the README's "Endpoints" table
shows them: completions, Responses, embeddings, speech (mp3 and wav), transcriptions (json and
srt) and a translation of the WAV files in `files/`, image generations (gpt-image-1 answers
`b64_json`, dall-e-3 a URL), an image edit uploading `files/photo.png` with `files/mask.png`,
Claude `/v1/messages` and Gemini `generateContent`. `make demo` runs it after the requests
and lists the media files it saved.
"""


# --------------------------------------------------------------------------------------------
# Every endpoint family, and the files its rows upload
# --------------------------------------------------------------------------------------------


def wav_bytes(seconds: float, freq_hz: float, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone (integer arithmetic: identical on every machine)."""
    import math

    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * freq_hz * i / rate)))
        for i in range(frames)
    )
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(samples)) + samples


SAMPLE_FILES: dict[str, bytes] = {}


def sample_files() -> dict[str, bytes]:
    """The files families.jsonl's upload rows name, relative to samples/."""
    if not SAMPLE_FILES:
        photo = [[(r * 16, g * 16, 160) for g in range(16)] for r in range(16)]
        mask = [[(0, 0, 0) if r < 8 else WHITE for _ in range(16)] for r in range(16)]
        SAMPLE_FILES.update(
            {
                "files/greeting.wav": wav_bytes(2.0, 440.0),
                "files/meeting-notes.wav": wav_bytes(3.5, 330.0),
                "files/photo.png": png_bytes(photo),
                "files/mask.png": png_bytes(mask),
            }
        )
    return SAMPLE_FILES


def _family(custom_id: str, url: str, body: JSONDict) -> JSONDict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def build_families() -> list[JSONDict]:
    """One or two rows of every endpoint family; uploads name files under files/."""
    user = [{"role": "user", "content": "Name three rivers in France, one line."}]
    return [
        _family("chat-1", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user}),
        _family("tools-1", "/v1/chat/completions", {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "What is the weather in Lyon?"}],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]},
            }}],
        }),
        _family("completion-1", "/v1/completions", {
            "model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 40,
        }),
        _family("responses-1", "/v1/responses", {
            "model": "o3-pro", "input": [{"role": "user", "content": "Is 2027 a prime number?"}],
        }),
        _family("embeddings-1", "/v1/embeddings", {
            "model": "text-embedding-3-small", "input": ["a river", "a mountain"],
        }),
        _family("speech-1", "/v1/audio/speech", {
            "model": "tts-1", "voice": "alloy", "input": "Welcome to the batch run demo.",
        }),
        _family("speech-2", "/v1/audio/speech", {
            "model": "tts-1-hd", "voice": "nova", "response_format": "wav",
            "input": "Every answer the gateway sells, saved as a file.",
        }),
        _family("transcription-1", "/v1/audio/transcriptions", {
            "model": "whisper-1", "file": "files/greeting.wav",
        }),
        _family("transcription-2", "/v1/audio/transcriptions", {
            "model": "whisper-1", "file": "files/meeting-notes.wav", "response_format": "srt",
        }),
        _family("translation-1", "/v1/audio/translations", {
            "model": "whisper-1", "file": "files/greeting.wav",
        }),
        _family("image-1", "/v1/images/generations", {
            "model": "gpt-image-1", "prompt": "A watercolour of a lighthouse", "size": "1024x1024",
        }),
        _family("image-2", "/v1/images/generations", {
            "model": "dall-e-3", "prompt": "A paper boat on a pond", "size": "1024x1024",
        }),
        _family("image-edit-1", "/v1/images/edits", {
            "model": "gpt-image-1", "prompt": "Make the sky stormy",
            "image": ["files/photo.png"], "mask": "files/mask.png",
        }),
        _family("claude-1", "/v1/messages", {
            "model": "claude-sonnet-4-5", "max_tokens": 200, "messages": user,
        }),
        _family("gemini-1", "/v1beta/models/gemini-2.5-flash:generateContent", {
            "contents": [{"role": "user", "parts": [{"text": "Name three rivers in Spain."}]}],
        }),
    ]  # fmt: skip


def build_all() -> dict[str, bytes]:
    rows = build_requests()
    lines = [line for _, line in rows]
    prompts = build_prompts()
    files = {
        "requests.jsonl": jsonl_bytes(lines),
        "requests.parquet": parquet_bytes(lines),
        "prompts.jsonl": jsonl_bytes(prompts),
        "families.jsonl": jsonl_bytes(build_families()),
        **sample_files(),
    }
    stats = describe(Counter(kind for kind, _ in rows), lines, prompts)
    sizes = {name: len(data) for name, data in files.items()}
    files["README.md"] = readme_text(stats, sizes).encode("utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the files on disk")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [
            n for n, d in files.items() if not (HERE / n).is_file() or (HERE / n).read_bytes() != d
        ]
        for name in stale:
            print(f"stale: samples/{name}", file=sys.stderr)
        return 1 if stale else 0
    for name, data in files.items():
        (HERE / name).parent.mkdir(parents=True, exist_ok=True)
        (HERE / name).write_bytes(data)
        print(f"wrote samples/{name} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
