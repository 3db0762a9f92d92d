-- The shop's OLTP schema (database clickstream_web, schema public), used by the Next.js app
-- through Prisma (login role sbw_web_app). Ids line up with the clickstream contract:
-- users.user_id is the Cognito sub (events' user_id), products.product_id is the events'
-- context_product_id; names, categories, brands, prices and url paths have the same limits.
-- Applied once by the oltp_schema role inside one transaction, recorded in schema_migrations.

CREATE TABLE public.users (
    user_id varchar(128) PRIMARY KEY CHECK (length(user_id) >= 1),
    email varchar(320) NOT NULL CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    display_name varchar(128),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON public.users (lower(email));

CREATE TABLE public.products (
    product_id varchar(64) PRIMARY KEY CHECK (length(product_id) >= 1),
    name varchar(256) NOT NULL CHECK (length(name) >= 1),
    category varchar(128) NOT NULL CHECK (length(category) >= 1),
    brand varchar(128) NOT NULL CHECK (length(brand) >= 1),
    price numeric(12, 2) NOT NULL CHECK (price >= 0),
    discount_price numeric(12, 2) CHECK (discount_price >= 0),
    url_path varchar(2048) NOT NULL UNIQUE CHECK (url_path ~ '^/[^[:cntrl:]]*$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_discount_not_above_price CHECK (discount_price IS NULL OR discount_price <= price)
);
CREATE INDEX products_category_idx ON public.products (category);
CREATE INDEX products_brand_idx ON public.products (brand);

CREATE TABLE public.inventory (
    product_id varchar(64) PRIMARY KEY REFERENCES public.products (product_id) ON DELETE CASCADE,
    quantity integer NOT NULL DEFAULT 0 CHECK (quantity >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.orders (
    order_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id varchar(128) NOT NULL REFERENCES public.users (user_id) ON DELETE RESTRICT,
    status varchar(16) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    total_amount numeric(12, 2) NOT NULL DEFAULT 0 CHECK (total_amount >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_id_idx ON public.orders (user_id);

CREATE TABLE public.order_items (
    order_id bigint NOT NULL REFERENCES public.orders (order_id) ON DELETE CASCADE,
    product_id varchar(64) NOT NULL REFERENCES public.products (product_id) ON DELETE RESTRICT,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX order_items_product_id_idx ON public.order_items (product_id);

-- Nobody but the owner creates objects in public; connecting is granted per role by the role's
-- tasks (least privilege), not to PUBLIC.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
